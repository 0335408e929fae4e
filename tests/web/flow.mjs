// Two students and an admin in headless chromium against the real daemon
// and the simulated Uno: A registers and books the slot in progress, B sees
// it booked without reloading (and the admin, on the week calendar, too);
// A flashes hello.hex (watching the progress bar and the board's greeting)
// and the echo firmware (typing a line and seeing it back), then writes a
// sketch with an error, follows the error to its line, fixes it, compiles
// and uploads it; B, who does not hold the board, finds its controls
// disabled and is told who holds it, and books and cancels on the week
// calendar by keyboard; A ends the session and can still copy its output.
// The admin then cancels B's booking (B's "My bookings" drops it at once),
// puts the board in maintenance and back, and disables (after a
// confirmation, refused once) and re-enables B, whose page signs out at
// once, without B doing anything.
//
// On a phone, a lab of quarter-hour slots opens its day at the slot in
// progress, not at midnight.
//
// Started by tests/blackbox/web.rs with APP_URL, SHORT_SLOTS_URL (a lab of
// quarter-hour slots and no board), HELLO_HEX, ECHO_HEX,
// ADMIN_EMAIL, ADMIN_PASSWORD, SHOTS (the screenshot folder) and
// RERO_TEST_TIME_SCALE (the black-box suite's multiplier of every wait) in
// its environment. Every wait is bounded, by a limit times that scale.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(root, 'target/web-tests/package.json'));
const { chromium } = require('playwright-core');

const url = process.env.APP_URL;
const scale = Number(process.env.RERO_TEST_TIME_SCALE || 1);
if (!(scale > 0 && Number.isFinite(scale))) throw new Error(`RERO_TEST_TIME_SCALE=${process.env.RERO_TEST_TIME_SCALE}: not a positive number`);
/** A time limit in milliseconds, scaled as every wait of the test suites is. */
const limit = (ms) => ms * scale;
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
  page.setDefaultTimeout(limit(10000));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`${name} console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`${name} page error: ${e.message}`));
  return page;
}

async function shot(page, what) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, '0')}-${what}.png`), fullPage: true });
}

async function register(page, email, at = url) {
  await page.goto(at);
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill('plum-orbit-cactus-41');
  await page.click('#register');
  await page.waitForSelector('.cards .board');
}

async function signIn(page, email, password) {
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.click('#login');
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Waits until the terminal's text contains `needle`. */
async function terminalShows(page, needle, timeout) {
  await page.waitForFunction((n) => document.getElementById('terminal').textContent.includes(n), needle,
    { timeout: limit(timeout) });
}

async function flash(page, file, what) {
  // The bar moves while the board is written, fed by upload_progress. A short
  // upload on a busy host may be over before a poll of the page sees the bar
  // half-way, so the page itself records every value the bar shows.
  await page.evaluate(() => {
    const bar = document.getElementById('progress');
    window.progressSeen = [];
    window.progressWatch?.disconnect();
    window.progressWatch = new MutationObserver(() => {
      if (bar.getBoundingClientRect().width > 0) window.progressSeen.push(bar.value);
    });
    window.progressWatch.observe(bar, { attributes: true, attributeFilter: ['value'] });
  });
  await page.setInputFiles('#firmware', file);
  await page.waitForFunction(() => /bytes in/.test(document.getElementById('upload-status').textContent), null,
    { timeout: limit(60000) });
  await shot(page, `a-${what}-done`);
  const seen = await page.evaluate(() => window.progressSeen);
  check(seen.some((v) => v > 0 && v < 100), `the progress bar never showed the upload under way: ${JSON.stringify(seen)}`);
}

/** A sketch for avr-gcc alone (the rig has no Arduino core): it greets on the UART at 115200. */
function sketch(greeting) {
  const notes = Array.from({ length: 30 }, (_, i) => `// Note ${i + 1}: long enough that the editor scrolls.`);
  return [...notes,
    '#include <avr/io.h>',
    'static void put(const char *s) {',
    '  while (*s) { while (!(UCSR0A & (1 << UDRE0))) {} UDR0 = *s++; }',
    '}',
    'int main() {',
    '  UCSR0A = 1 << U2X0; UBRR0 = 16; UCSR0B = 1 << TXEN0;',
    `  for (;;) { put(${greeting}); for (volatile long i = 0; i < 100000; i++) {} }`,
    '}',
    ''].join('\n');
}
const SKETCH_ERROR_LINE = 37;

/** The line the editor's caret is on, and whether the editor has the focus and is scrolled. */
function caret(page) {
  return page.evaluate(() => {
    const area = document.getElementById('code');
    return {
      line: area.value.slice(0, area.selectionStart).split('\n').length,
      focused: document.activeElement === area,
      scrolled: area.scrollTop > 0,
    };
  });
}

try {
  const a = await student('A', { width: 1200, height: 900 });
  // B uses a phone: the calendar and the session view must work at its width.
  const b = await student('B', { width: 390, height: 844 });
  const admin = await student('admin', { width: 1200, height: 900 });
  // Destructive admin actions ask first: every question is kept, and
  // answered as `confirming` says.
  const questions = [];
  let confirming = true;
  admin.on('dialog', async (dialog) => {
    questions.push(dialog.message());
    await (confirming ? dialog.accept() : dialog.dismiss());
  });
  await a.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });

  // B's phone on a day of 96 slots: the page opens scrolled to the one in
  // progress (after 02:00 UTC it is below the first screen).
  await register(b, 'b@example.com', process.env.SHORT_SLOTS_URL);
  await b.goto(`${process.env.SHORT_SLOTS_URL}/#/board/default`);
  await b.waitForSelector('li.slot.now');
  const inView = await b.evaluate(() => {
    const box = document.querySelector('li.slot.now').getBoundingClientRect();
    return { top: Math.round(box.top), bottom: Math.round(box.bottom), height: window.innerHeight, scrolled: window.scrollY };
  });
  check(inView.top >= 0 && inView.bottom <= inView.height,
    `the slot in progress is not on the phone's screen: ${JSON.stringify(inView)}`);
  await shot(b, 'b-phone-day-at-now');

  await register(a, 'a@example.com');
  await shot(a, 'a-overview');
  await register(b, 'b@example.com');
  await admin.goto(url);
  await signIn(admin, process.env.ADMIN_EMAIL, process.env.ADMIN_PASSWORD);
  await admin.waitForSelector('#nav-admin:visible');

  await a.goto(`${url}/#/board/${DEVICE}`);
  await b.goto(`${url}/#/board/${DEVICE}`);
  await admin.goto(`${url}/#/board/${DEVICE}/week`);
  await a.waitForSelector('li[data-slot="0"][data-state="available"]');
  await b.waitForSelector('li[data-slot="0"][data-state="available"]');
  const today = await a.getAttribute('li[data-slot="0"]', 'data-date');
  const todayInWeek = `.week li[data-date="${today}"][data-slot="0"]`;
  await admin.waitForSelector(`${todayInWeek}[data-state="available"]`);
  check(await admin.locator('.week-day').count() === 7, 'the week calendar does not show seven days');
  // The lab's slots fill a day: one ends at midnight, shown as 24:00.
  const span = await b.textContent('li[data-slot="0"] .time');
  check(span === '00:00–24:00', `a day-long slot reads ${span}`);
  await shot(b, 'b-calendar-free');
  await shot(admin, 'admin-week-free');

  const booked = Date.now();
  await a.click('li[data-slot="0"] button');
  await a.waitForSelector('li[data-slot="0"][data-state="mine"]');
  // Neither B nor the admin has reloaded: the socket's slots_update redraws
  // B's day and the admin's week.
  await b.waitForSelector('li[data-slot="0"][data-state="booked"]', { timeout: limit(1000) });
  const seenAfter = Date.now() - booked;
  await admin.waitForSelector(`${todayInWeek}[data-state="booked"]`, { timeout: limit(1000) });
  const weekSeenAfter = Date.now() - booked;
  await shot(a, 'a-booked');
  await shot(b, 'b-sees-booked');
  await shot(admin, 'admin-week-sees-booked');

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

  // The sketch editor: an error, linked to its line; then fixed and uploaded.
  await a.click('summary:has-text("Write a sketch")');
  await a.fill('#code', sketch('greeting'));
  await a.click('#compile');
  const diagnostic = a.locator('#compile-output a.diag.error').first();
  await diagnostic.waitFor({ timeout: limit(60000) });
  check((await diagnostic.textContent()).includes(`:${SKETCH_ERROR_LINE}:`),
    `the error is not on line ${SKETCH_ERROR_LINE}: ${await diagnostic.textContent()}`);
  await shot(a, 'a-sketch-error');
  await diagnostic.click();
  const at = await caret(a);
  check(at.focused && at.line === SKETCH_ERROR_LINE && at.scrolled,
    `clicking the error did not take the editor to line ${SKETCH_ERROR_LINE}: ${JSON.stringify(at)}`);
  await shot(a, 'a-sketch-error-line');
  await a.fill('#code', sketch('"sketch says hi\\r\\n"'));
  await a.click('#compile');
  await a.waitForFunction(() => !/^Compiling/.test(document.getElementById('compile-output').textContent), null,
    { timeout: limit(60000) });
  const compiled = await a.textContent('#compile-output');
  check(await a.locator('#compile-output a.diag.error').count() === 0, `the fixed sketch did not compile: ${compiled}`);
  await a.click('#upload-code');
  await a.waitForFunction(() => /bytes in/.test(document.getElementById('upload-status').textContent), null,
    { timeout: limit(90000) });
  await terminalShows(a, 'sketch says hi', 20000);
  await shot(a, 'a-sketch-runs');

  // B does not hold the board: every control that needs it is disabled,
  // and the page says someone else holds it instead of offering its slot.
  await b.goto(`${url}/#/session/${DEVICE}`);
  await b.waitForSelector('#session-state:has-text("Someone else holds this board")');
  const refusal = await b.textContent('#session-state');
  check(!/book its current slot/i.test(refusal), `B is offered a slot A holds: ${refusal}`);
  for (const control of ['#firmware', '#console-input', '#send', '#compile', '#upload-code']) {
    check(await b.isDisabled(control), `${control} is usable by B, who does not hold the board`);
  }
  check(await b.locator('#drop.disabled').count() === 1, '"Choose a file" looks usable to B');
  await shot(b, 'b-not-holding');
  const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the session view is ${overflow} px wider than a phone`);

  // B's week, at phone width and by keyboard: Enter books tomorrow's slot,
  // the focus stays on it, and Enter again cancels it.
  await b.goto(`${url}/#/board/${DEVICE}`);
  await b.click('#view-week');
  await b.waitForSelector('.week .week-day');
  const [y, m, d] = today.split('-').map(Number);
  const tomorrow = `.week li[data-date="${new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10)}"][data-slot="0"]`;
  if (await b.locator(tomorrow).count() === 0) {
    // Today is a Sunday: tomorrow is in the next week.
    await b.click('#cal-next');
    await b.waitForSelector(tomorrow);
  }
  await b.focus(`${tomorrow} button`);
  await b.keyboard.press('Enter');
  await b.waitForSelector(`${tomorrow}[data-state="mine"]`);
  const keptFocus = await b.evaluate((sel) => document.activeElement === document.querySelector(`${sel} button`), tomorrow);
  check(keptFocus, 'booking by keyboard lost the focus');
  const weekOverflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(weekOverflow <= 0, `the week calendar is ${weekOverflow} px wider than a phone`);
  await shot(b, 'b-week-booked-by-keyboard');
  await b.keyboard.press('Enter');
  await b.waitForSelector(`${tomorrow}[data-state="available"]`);

  await a.click('#end-session');
  await a.waitForSelector('#session-banner:has-text("Session ended")');
  // Said once; the output can still be copied and cleared, nothing flashed;
  // the next free slot is offered.
  const endedText = await a.textContent('main');
  check(endedText.split('Session ended').length === 2, `"Session ended" is not said exactly once: ${endedText}`);
  check(await a.isEnabled('#copy') && await a.isEnabled('#clear'), 'Copy or Clear is disabled after the session');
  check(await a.isDisabled('#firmware') && await a.locator('#drop.disabled').count() === 1,
    '"Choose a file" still looks usable after the session');
  await a.waitForSelector('#book-next');
  await a.click('#copy');
  const copied = await a.evaluate(() => navigator.clipboard.readText());
  check(copied.includes('sketch says hi'), `Copy after the session copied ${JSON.stringify(copied.slice(0, 80))}`);
  await shot(a, 'a-session-ended');

  // B takes the freed slot in progress; the admin cancels it.
  await b.click('#cal-home');
  await b.waitForSelector(`${todayInWeek}[data-state="available"]`);
  await b.click(`${todayInWeek} button`);
  await b.waitForSelector(`${todayInWeek}[data-state="mine"]`);
  // B watches "My bookings" while the admin cancels it.
  await b.evaluate(() => { location.hash = '#/bookings'; });
  await b.waitForSelector('main td:text-is("uno-1")');

  await admin.click('#nav-admin');
  await admin.waitForSelector('caption:has-text("Accounts")');
  for (const email of ['a@example.com', 'b@example.com', process.env.ADMIN_EMAIL]) {
    check(await admin.locator(`td:text-is("${email}")`).count() > 0, `the accounts list lacks ${email}`);
  }
  await admin.waitForSelector('td:text-is("b@example.com") >> xpath=.. >> button:has-text("Cancel")');
  await shot(admin, 'admin-page');
  await admin.fill('#account-search', 'b@exa');
  check(await admin.isHidden('tr[data-email="a@example.com"]') && await admin.isVisible('tr[data-email="b@example.com"]'),
    'the account search does not find b@example.com alone');
  await admin.fill('#account-search', '');
  await admin.click('td:text-is("b@example.com") >> xpath=.. >> button:has-text("Cancel")');
  await admin.waitForSelector('text=No bookings today.');
  check(questions.some((q) => q.includes("Cancel b@example.com's booking")), `no confirmation to cancel: ${questions}`);
  // Without a reload, B's list loses the booking and its countdown.
  await b.waitForSelector('main :text("You have no bookings")', { timeout: limit(2000) });
  check(await b.locator('main :text("running")').count() === 0, 'B still counts down a cancelled booking');
  await shot(admin, 'admin-cancelled-b');
  await shot(b, 'b-sees-cancelled');
  await b.evaluate(() => history.back());
  await b.waitForSelector(`${todayInWeek}[data-state="available"]`);

  // Maintenance on and off.
  await admin.click(`button[aria-label="Put in maintenance ${DEVICE}"]`);
  await admin.waitForSelector(`button[aria-label="End maintenance of ${DEVICE}"]`);
  check(await admin.locator('td:text-matches("^maintenance")').count() > 0, 'the board\'s health does not say maintenance');
  await shot(admin, 'admin-maintenance-on');
  await admin.click(`button[aria-label="End maintenance of ${DEVICE}"]`);
  await admin.waitForSelector(`button[aria-label="Put in maintenance ${DEVICE}"]`);
  await shot(admin, 'admin-maintenance-off');

  // Disabling asks first; refused, nothing happens.
  confirming = false;
  await admin.click('button[aria-label="Disable b@example.com"]');
  check(questions.at(-1).startsWith('Disable b@example.com?'), `no confirmation to disable: ${questions.at(-1)}`);
  check(await admin.locator('button[aria-label="Disable b@example.com"]').count() === 1, 'a refused confirmation disabled B');
  confirming = true;
  // Disabled, B is signed out at once, on the page it is on, and cannot sign in again.
  await admin.click('button[aria-label="Disable b@example.com"]');
  await admin.waitForSelector('button[aria-label="Enable b@example.com"]');
  await shot(admin, 'admin-disabled-b');
  await b.waitForSelector('form #login', { timeout: limit(2000) });
  await b.waitForSelector('p.error:has-text("disabled")');
  check(await b.isHidden('#nav'), 'the disabled student still sees the signed-in menu');
  await shot(b, 'b-signed-out-disabled');
  await signIn(b, 'b@example.com', 'plum-orbit-cactus-41');
  await b.waitForSelector('p.error:not(:has-text("signed out")):has-text("disabled")');
  await shot(b, 'b-sign-in-refused');

  await admin.click('button[aria-label="Enable b@example.com"]');
  await admin.waitForSelector('button[aria-label="Disable b@example.com"]');
  await signIn(b, 'b@example.com', 'plum-orbit-cactus-41');
  // Signed in again, B is back on the page it was signed out of.
  await b.waitForSelector('#calendar .slot');
  await shot(b, 'b-enabled-again');

  // Chromium logs every refused request as "Failed to load resource"; the
  // refusals this flow provokes are B's (the upload without the slot, 403,
  // and the requests of a disabled account, 403), each shown to B above.
  // Anything else is a fault.
  const expected = 'B console: Failed to load resource: the server responded with a status of 403 (Forbidden)';
  const unexpected = problems.filter((p) => p !== expected);
  check(unexpected.length === 0, `the browser reported errors:\n${unexpected.join('\n')}`);
  console.log(`web flow passed: B saw the booking after ${seenAfter} ms, the admin's week after ${weekSeenAfter} ms; `
    + `refusal shown: ${refusal}`);
} finally {
  await browser.close();
}
