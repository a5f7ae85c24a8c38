// Drives VS Code (code-server in Debian's Chromium, through playwright-core) as a user would:
// opens a Python file, types, waits for ghost text, accepts it with Tab and saves; runs
// "Qwen: Explain Selection" from the command palette and watches the panel stream; stops a second
// explanation with the panel's Stop button. Writes what it saw as JSON to QWEN_E2E_RESULT and
// screenshots to QWEN_E2E_SHOTS; the pytest side makes the assertions.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(new URL("../../editors/vscode/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = process.env;
const shots = env.QWEN_E2E_SHOTS;
const result = { events: [] };
const started = Date.now();
const note = (event) => result.events.push(`${Date.now() - started} ms: ${event}`);

class FatalError extends Error {}

async function waitFor(what, condition, timeoutMs, intervalMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition().catch((err) => {
      if (err instanceof FatalError) {
        throw err;
      }
      return undefined; // e.g. an element that is not there yet
    });
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(shots, name) });
  note(`screenshot ${name}`);
}

// The ghost text on screen, and the text of its line without it.
function readGhost(page) {
  return page.evaluate(() => {
    const inline = [...document.querySelectorAll(".monaco-editor .ghost-text-decoration")];
    const below = [...document.querySelectorAll(".monaco-editor .ghost-text .view-line")];
    if (inline.length === 0 && below.length === 0) {
      return undefined;
    }
    const clean = (text) => text.replace(/\u00a0/g, " ");
    const lines = [inline.map((e) => clean(e.textContent)).join(""), ...below.map((e) => clean(e.textContent))];
    const text = lines.join("\n");
    if (!text.trim()) {
      return undefined;
    }
    const line = (inline[0] ?? below[0]).closest(".view-line");
    let typedLine = null;
    if (inline.length > 0 && line) {
      const copy = line.cloneNode(true);
      copy.querySelectorAll(".ghost-text-decoration, .ghost-text-decoration-preview").forEach((e) => e.remove());
      typedLine = clean(copy.textContent);
    }
    return { text, typedLine };
  });
}

async function statusBarText(page) {
  const items = await page.locator(".statusbar-item").allInnerTexts();
  return items.map((t) => t.trim()).find((t) => t.startsWith("Qwen"));
}

async function runCommand(page, title) {
  await page.keyboard.press("F1");
  await page.locator(".quick-input-widget input").waitFor({ state: "visible" });
  await page.keyboard.type(title);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: 10000 });
  await page.keyboard.press("Enter");
}

async function explainFrame(page) {
  for (const frame of page.frames()) {
    if (await frame.locator("#qwen-explain").count().catch(() => 0)) {
      return frame;
    }
  }
  return undefined;
}

async function goToLine(page, line) {
  await page.keyboard.press("Control+G");
  await page.locator(".quick-input-widget input").waitFor({ state: "visible" });
  await page.keyboard.type(String(line));
  await page.keyboard.press("Enter");
}

async function testGhostText(page) {
  await goToLine(page, Number(env.QWEN_E2E_LINE));
  await page.keyboard.press("End");
  for (const [i, part] of env.QWEN_E2E_TYPE.split("\n").entries()) {
    if (i > 0) {
      await page.keyboard.press("Enter");
    }
    await page.keyboard.type(part, { delay: 40 });
  }
  let lastKeystroke = Date.now();
  note(`typed ${JSON.stringify(env.QWEN_E2E_TYPE)}`);
  const timeout = Number(env.QWEN_E2E_GHOST_TIMEOUT_MS);
  let ghost;
  try {
    ghost = await waitFor("ghost text", () => readGhost(page), timeout, 5);
  } catch {
    // The model may have had nothing to say while typing; ask once more as a user would (Alt+\).
    note("no ghost text from typing: triggering inline suggestions");
    await page.keyboard.press("Alt+Backslash");
    lastKeystroke = Date.now();
    result.ghost_triggered_explicitly = true;
    ghost = await waitFor("ghost text after Alt+\\", () => readGhost(page), timeout, 5);
  }
  result.ghost_ms = Date.now() - lastKeystroke;
  result.ghost = ghost.text;
  result.typed_line = ghost.typedLine;
  note(`ghost text ${JSON.stringify(ghost.text)}`);
  await screenshot(page, "vscode-ghost-text.png");

  await page.keyboard.press("Tab");
  await waitFor("the ghost text to be accepted", async () => !(await readGhost(page)), 10000);
  await page.keyboard.press("Control+S");
  await waitFor("the file to be saved", async () => (await page.locator(".tab.active.dirty").count()) === 0, 10000);
  note("accepted and saved");
  await screenshot(page, "vscode-accepted.png");
}

async function selectLines(page, first, last) {
  await goToLine(page, first);
  await page.keyboard.press("Home");
  for (let line = first; line <= last; line++) {
    await page.keyboard.press("Shift+ArrowDown");
  }
}

async function testExplain(page) {
  const [first, last] = env.QWEN_E2E_EXPLAIN.split(",").map(Number);
  await selectLines(page, first, last);
  await runCommand(page, "Qwen: Explain Selection");
  const begun = Date.now();
  const frame = await waitFor("the explain panel", () => explainFrame(page), 30000, 200);
  const content = frame.locator("#qwen-explain");
  const state = frame.locator("#state");
  const snapshots = [];
  let midShot = false;
  await waitFor(
    "the end of the explanation",
    async () => {
      const text = (await content.innerText()).trim();
      if (text && text !== snapshots[snapshots.length - 1]) {
        snapshots.push(text);
        if (snapshots.length === 1) {
          result.explain_first_text_ms = Date.now() - begun;
        }
        if (!midShot && text.length > 80) {
          midShot = true;
          await screenshot(page, "vscode-explain-streaming.png");
        }
      }
      const now = await state.innerText();
      if (now === "failed") {
        throw new FatalError(`the explanation failed: ${await content.innerText()}`);
      }
      return now === "done";
    },
    600000,
    10,
  );
  result.explain_ms = Date.now() - begun;
  result.explain_snapshots = snapshots;
  result.explain_text = (await content.innerText()).trim();
  note(`explained in ${snapshots.length} snapshots`);
  await screenshot(page, "vscode-explain.png");

  // Stop: the panel says so and the text stops growing.
  await selectLines(page, first, last);
  await runCommand(page, "Qwen: Explain Selection");
  await waitFor("streamed text", async () => (await state.innerText()) === "streaming…", 120000, 10);
  await frame.locator("#stop").click();
  await waitFor("the stop", async () => (await state.innerText()) === "stopped", 30000);
  const stoppedText = (await content.innerText()).trim();
  await new Promise((resolve) => setTimeout(resolve, 2000));
  result.stopped_state = await state.innerText();
  result.stopped_text_grew = (await content.innerText()).trim() !== stoppedText;
  note("stopped");
  await screenshot(page, "vscode-explain-stopped.png");
}

async function main(page) {
  await page.goto(env.QWEN_E2E_URL);
  await page.locator(".monaco-workbench").waitFor({ timeout: 120000 });
  note("workbench");
  await page.keyboard.press("Control+P");
  await page.locator(".quick-input-widget input").waitFor({ state: "visible" });
  await page.keyboard.type(env.QWEN_E2E_FILE);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: env.QWEN_E2E_FILE }).first().waitFor();
  await page.keyboard.press("Enter");
  await page.locator(".monaco-editor .view-lines", { hasText: "circle_area" }).waitFor({ timeout: 30000 });
  note("file open");
  // The extension's status bar item says when the model is ready.
  result.status_loading = await waitFor("the Qwen status bar item", () => statusBarText(page), 60000, 50);
  result.status_ready = await waitFor(
    "the model to load",
    async () => {
      const text = await statusBarText(page);
      return text && !/loading|Starting/i.test(text) && text;
    },
    180000,
    100,
  );
  note(`status bar: ${result.status_ready}`);
  await page.locator(".monaco-editor .view-lines").first().click();
  await testGhostText(page);
  await testExplain(page);
  result.status_after = await statusBarText(page);
}

const browser = await chromium.launch({
  executablePath: env.QWEN_E2E_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
try {
  await main(page);
} catch (err) {
  result.error = err instanceof Error ? err.stack : String(err);
  await screenshot(page, "vscode-failure.png").catch(() => undefined);
  // The server's log, for the post-mortem.
  await runCommand(page, "Qwen: Show Log").catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await screenshot(page, "vscode-failure-log.png").catch(() => undefined);
} finally {
  writeFileSync(env.QWEN_E2E_RESULT, JSON.stringify(result, null, 2));
  await browser.close();
}
