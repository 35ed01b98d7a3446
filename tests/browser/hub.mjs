// The dashboard's Federation Hub picture in headless Chromium: waits for the policy graph
// (group nodes, edges) and the connected federates drawn beside their groups, reports what
// the page drew, and saves a screenshot. Prints one JSON line; exits non-zero on failure.
//
// usage: node hub.mjs URL TOKEN SCREENSHOT FEDERATES
import { openDashboard } from "./open.mjs";

const [url, token, shot, feds] = process.argv.slice(2);
const result = {};
let browser;
try {
  const opened = await openDashboard(url, token, { width: 1400, height: 1100 });
  browser = opened.browser;
  const { page, errors } = opened;
  await page.waitForFunction((n) => document.querySelectorAll("#hubgraph circle.fed.live").length >= Number(n), feds, { timeout: 15000 });
  result.visible = await page.isVisible("#hub");
  result.groups = await page.$$eval("#hubgraph circle.node.group", (c) => c.length);
  result.edges = await page.$$eval("#hubgraph path.edge", (p) => p.map((e) => e.dataset.edge));
  result.filters = await page.$$eval("#hubgraph text.filter", (t) => t.map((e) => e.textContent));
  result.live = await page.$$eval("#hubgraph circle.fed.live", (c) => c.map((e) => e.dataset.federate));
  result.rows = await page.$$eval("#hubfeds tbody tr", (r) => r.length);
  await page.locator("#hub").screenshot({ path: shot });
  result.errors = errors;
  console.log(JSON.stringify(result));
} catch (e) {
  console.log(JSON.stringify({ ...result, error: String(e) }));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
