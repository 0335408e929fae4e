// Two students in headless chromium against the real daemon and the
// simulated Uno: A registers and books the slot in progress, B sees it
// booked without reloading, A flashes hello.hex (watching the progress bar
// and the board's greeting) and the echo firmware (typing a line and seeing
// it back), B is told why an upload is refused, and A ends the session.
//
// Started by tests/blackbox/web.rs with APP_URL, HELLO_HEX, ECHO_HEX and
// SHOTS (the screenshot folder) in its environment. Every wait is bounded.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(root, 'target/web-tests/package.json'));
const { chromium } = require('playwright-core');

const url = process.env.APP_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const DEVICE = 'uno-1';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in a container has no user namespaces for chromium's sandbox.
  args: ['--no-sandbox'],
});
const problems = [];
let step = 0;

async function student(name, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`${name} console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`${name} page error: ${e.message}`));
  return page;
}

async function shot(page, what) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, '0')}-${what}.png`), fullPage: true });
}

async function register(page, email) {
  await page.goto(url);
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill('password123');
  await page.click('#register');
  await page.waitForSelector('.cards .board');
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Waits until the terminal's text contains `needle`. */
async function terminalShows(page, needle, timeout) {
  await page.waitForFunction((n) => document.getElementById('terminal').textContent.includes(n), needle, { timeout });
}

async function flash(page, file, what) {
  await page.setInputFiles('#firmware', file);
  // The bar moves while the board is written, fed by upload_progress.
  await page.waitForFunction(() => {
    const bar = document.getElementById('progress');
    return bar.value > 0 && bar.value < 100 && bar.getBoundingClientRect().width > 0;
  }, null, { timeout: 20000 });
  await shot(page, `a-${what}-progress`);
  await page.waitForFunction(() => /bytes in/.test(document.getElementById('upload-status').textContent), null,
    { timeout: 60000 });
}

try {
  const a = await student('A', { width: 1200, height: 900 });
  // B uses a phone: the calendar and the session view must work at its width.
  const b = await student('B', { width: 390, height: 844 });

  await register(a, 'a@example.com');
  await shot(a, 'a-overview');
  await register(b, 'b@example.com');

  await a.goto(`${url}/#/board/${DEVICE}`);
  await b.goto(`${url}/#/board/${DEVICE}`);
  await a.waitForSelector('li[data-slot="0"][data-state="available"]');
  await b.waitForSelector('li[data-slot="0"][data-state="available"]');
  await shot(b, 'b-calendar-free');

  const booked = Date.now();
  await a.click('li[data-slot="0"] button');
  await a.waitForSelector('li[data-slot="0"][data-state="mine"]');
  // B has not reloaded: the socket's slots_update redraws its calendar.
  await b.waitForSelector('li[data-slot="0"][data-state="booked"]', { timeout: 1000 });
  const seenAfter = Date.now() - booked;
  await shot(a, 'a-booked');
  await shot(b, 'b-sees-booked');

  await a.click('li[data-slot="0"] a.button');
  await a.waitForSelector('#console-state:has-text("connected")');
  await flash(a, process.env.HELLO_HEX, 'hello');
  await terminalShows(a, 'hello from the board', 20000);
  await shot(a, 'a-hello-output');

  await flash(a, process.env.ECHO_HEX, 'echo');
  // The echo program's banner may pass before the console has the port
  // again, so a line that comes back is the proof that it runs.
  let echoed = false;
  for (let i = 0; i < 20 && !echoed; i += 1) {
    await a.fill('#console-input', `ping ${i}`);
    await a.press('#console-input', 'Enter');
    echoed = await terminalShows(a, `ping ${i}`, 700).then(() => true, () => false);
  }
  check(echoed, 'the echo firmware never echoed a line');
  await shot(a, 'a-echo');

  await b.goto(`${url}/#/session/${DEVICE}`);
  await b.waitForSelector('#firmware', { state: 'attached' });
  await b.setInputFiles('#firmware', process.env.HELLO_HEX);
  await b.waitForFunction(() => document.getElementById('upload-status').textContent.length > 0);
  const refusal = await b.textContent('#upload-status');
  check(/slot|book/i.test(refusal), `B's refusal does not say why: ${refusal}`);
  await shot(b, 'b-upload-refused');
  const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the session view is ${overflow} px wider than a phone`);

  await a.click('#end-session');
  await a.waitForSelector('#session-banner:has-text("Session ended")');
  await shot(a, 'a-session-ended');

  // Chromium logs every refused request as "Failed to load resource"; the
  // one refusal this flow provokes (B's upload, 403) is expected and shown
  // to B above. Anything else is a fault.
  const expected = 'B console: Failed to load resource: the server responded with a status of 403 (Forbidden)';
  const unexpected = problems.filter((p) => p !== expected);
  check(unexpected.length === 0, `the browser reported errors:\n${unexpected.join('\n')}`);
  console.log(`web flow passed: B saw the booking after ${seenAfter} ms; refusal shown: ${refusal}`);
} finally {
  await browser.close();
}
