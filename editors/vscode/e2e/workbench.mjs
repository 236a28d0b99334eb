// Shared steps for driving code-server in headless chromium.
import puppeteer from "puppeteer-core";

export async function launch() {
  return puppeteer.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    defaultViewport: { width: 1000, height: 600 },
  });
}

async function chord(page, modifier, key) {
  await page.keyboard.down(modifier);
  await page.keyboard.press(key);
  await page.keyboard.up(modifier);
}

/** Open `file` of the workbench at `url` (Ctrl+P), wait for the server, put the cursor at the end. */
export async function openAtEnd(page, url, file, timeout) {
  await page.goto(url, { waitUntil: "domcontentloaded", timeout });
  await page.waitForSelector(".monaco-workbench .part.editor", { timeout });
  await chord(page, "Control", "KeyP");
  await page.waitForSelector(".quick-input-widget input", { visible: true, timeout });
  await page.keyboard.type(file);
  await page.waitForSelector(".quick-input-list .monaco-list-row", { visible: true, timeout });
  await page.keyboard.press("Enter");
  await page.waitForSelector(".monaco-editor .view-lines", { visible: true, timeout });
  // The server is up once the status bar item shows its check mark.
  await page.waitForFunction(() => [...document.querySelectorAll(".statusbar-item")]
    .some((e) => (e.textContent || "").includes("Qwen") && e.querySelector(".codicon-check")), { timeout });
  await page.click(".monaco-editor .view-lines");
  await chord(page, "Control", "End");
}

export const save = (page) => chord(page, "Control", "KeyS");

/** The ghost text now on screen, one string per line ("" when none). */
export async function ghostText(page) {
  return page.evaluate(() => {
    const first = [...document.querySelectorAll(".ghost-text-decoration")].map((e) => e.textContent).join("");
    const more = [...document.querySelectorAll(".ghost-text .view-line")].map((e) => e.textContent);
    return [first, ...more].map((t) => (t || "").replace(/\u00a0/g, " "));
  });
}
