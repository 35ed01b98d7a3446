// Drives takgate's dashboard in headless Chromium (Debian's, through playwright-core):
// token, live links, add a federation server from the form, see it connect, test it,
// disable it, and save a screenshot. Prints one JSON line; exits non-zero on any failure.
//
// usage: node dashboard.mjs URL TOKEN SCREENSHOT NAME PORT CA_PEM CERT_PEM KEY_PEM
import { readFileSync } from "node:fs";
import { openDashboard } from "./open.mjs";

const [url, token, shot, name, port, ca, cert, key] = process.argv.slice(2);
const result = { steps: [] };
let browser;
try {
  const opened = await openDashboard(url, token, { width: 1400, height: 1000 });
  browser = opened.browser;
  const { page, errors } = opened;
  await page.waitForFunction(() => document.querySelectorAll("#links tbody tr").length >= 1);
  result.links = await page.$$eval("#links tbody tr", (rows) => rows.map((r) => r.cells[0].textContent));
  result.steps.push("links");
  await page.fill("#server-form input[name=name]", name);
  await page.fill("#server-form input[name=address]", "127.0.0.1");
  await page.fill("#server-form input[name=port]", port);
  await page.fill("#server-form input[name=mission_filter]", "ops-*, training");
  await page.fill("#server-form textarea[name=ca_certificate]", readFileSync(ca, "utf8"));
  await page.fill("#server-form textarea[name=client_certificate]", readFileSync(cert, "utf8"));
  await page.fill("#server-form textarea[name=client_key]", readFileSync(key, "utf8"));
  await page.click("#save");
  const row = (n, cls) => [...document.querySelectorAll("#servers tbody tr")].some((r) => r.textContent.includes(n) && r.querySelector("span." + cls));
  await page.waitForFunction(([n]) => [...document.querySelectorAll("#servers tbody tr")].some((r) => r.textContent.includes(n) && r.querySelector("span.connected")), [name], { timeout: 15000 });
  result.steps.push("added and connected");
  await page.click("#servers button[data-test]");
  await page.waitForFunction(() => document.querySelector("#msg").textContent.includes("answered every stage"), null, { timeout: 15000 });
  result.test_message = await page.textContent("#msg");
  result.steps.push("tested");
  await page.click("#servers button[data-toggle]");
  await page.waitForFunction(([n]) => [...document.querySelectorAll("#servers tbody tr")].some((r) => r.textContent.includes(n) && r.querySelector("span.disabled")), [name], { timeout: 15000 });
  result.steps.push("disabled");
  await page.click("#servers button[data-toggle]");
  await page.waitForFunction(([n]) => [...document.querySelectorAll("#servers tbody tr")].some((r) => r.textContent.includes(n) && r.querySelector("span.connected")), [name], { timeout: 15000 });
  result.steps.push("enabled");
  await page.click("#servers button[data-edit]");
  await page.waitForFunction(() => document.querySelector("#form-title").textContent.startsWith("Edit"));
  result.edit_filter = await page.inputValue("#server-form input[name=mission_filter]");
  result.edit_key_shown = (await page.inputValue("#server-form textarea[name=client_key]")).length > 0;
  result.steps.push("edit form");
  await page.waitForTimeout(2500); // two refreshes: rates and queue are filled in
  result.queue_rows = await page.$$eval("#queue tbody tr", (rows) => rows.length);
  await page.screenshot({ path: shot, fullPage: true });
  result.errors = errors;
  result.ok = errors.length === 0;
} catch (e) {
  result.ok = false;
  result.error = String(e);
} finally {
  if (browser) await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
