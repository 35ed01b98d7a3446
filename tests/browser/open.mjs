// Opens takgate's dashboard in Debian's Chromium (playwright-core, no bundled browser) and
// signs in with the admin token: the page has loaded once when this returns. Page errors are
// collected in `errors`.
import { chromium } from "playwright-core";

export async function openDashboard(url, token, viewport) {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url);
    await page.fill("#token", token);
    await page.click("#save-token");
    await page.waitForSelector("body[data-loaded='1']", { timeout: 10000 });
  } catch (e) {
    await browser.close();
    throw e;
  }
  return { browser, page, errors };
}
