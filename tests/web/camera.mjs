// A board camera in headless chromium: the holder's session view shows the
// live picture with frames that advance and a frame rate; another student's
// is told the camera is not theirs to watch; when the holder ends the
// session, the picture stops and the page says why.
//
// Started by tests/blackbox/camera.rs with APP_URL, HOLDER, OTHER (e-mail
// addresses whose password is PASSWORD), SHOTS and RERO_TEST_TIME_SCALE in
// its environment. The frames carry their number in a JPEG comment segment.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(root, 'target/web-tests/package.json'));
const { chromium } = require('playwright-core');

const url = process.env.APP_URL;
const scale = Number(process.env.RERO_TEST_TIME_SCALE || 1);
const limit = (ms) => ms * scale;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const problems = [];

async function signedIn(email) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // The page's policy lets it fetch nothing but its own origin (not its blob: URLs), so the
  // test keeps the last pictures' bytes as the page hands them to the <img>.
  await context.addInitScript(() => {
    const create = URL.createObjectURL.bind(URL);
    const kept = new Map();
    window.pictureBytes = (url) => kept.get(url);
    URL.createObjectURL = (blob) => {
      const url = create(blob);
      kept.set(url, blob);
      if (kept.size > 4) kept.delete(kept.keys().next().value);
      return url;
    };
  });
  const page = await context.newPage();
  page.setDefaultTimeout(limit(10000));
  page.on('pageerror', (e) => problems.push(`${email}: ${e.message}`));
  // A refused fetch is logged by the browser as an error; a policy violation is a bug.
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) problems.push(`${email}: ${m.text()}`); });
  await page.goto(url);
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill(process.env.PASSWORD);
  await page.click('#login');
  await page.waitForSelector('.cards .board');
  await page.goto(`${url}/#/session/uno-1`);
  return page;
}

/** The number of the frame the picture shows, once it is greater than `after` (polled for 10 s, scaled). */
async function shownFrame(page, after = 0) {
  const deadline = Date.now() + limit(10000);
  while (Date.now() < deadline) {
    const frame = await page.evaluate(async () => {
      const img = document.getElementById('camera-image');
      if (!img?.src.startsWith('blob:')) return null;
      const blob = window.pictureBytes(img.src);
      if (!blob) return null;
      try {
        const bytes = new Uint8Array(await blob.arrayBuffer());
        const length = (bytes[4] << 8) | bytes[5];
        return Number(new TextDecoder().decode(bytes.subarray(6, 4 + length)).replace('frame ', ''));
      } catch {
        return null;
      }
    });
    if (frame > after) return frame;
    await page.waitForTimeout(100);
  }
  throw new Error(`no frame after ${after} within ${limit(10000)} ms`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

try {
  const holder = await signedIn(process.env.HOLDER);
  const first = await shownFrame(holder);
  // The page's own picture, read back: a later frame replaces it.
  const later = await shownFrame(holder, first);
  check(later > first, `the picture did not advance: frame ${first}, then ${later}`);
  await holder.waitForFunction(() => /^[1-9]\d* fps$/.test(document.getElementById('camera-fps')?.textContent));
  await holder.waitForFunction(() => document.getElementById('camera-state')?.textContent === 'Live');
  await holder.screenshot({ path: join(shots, 'camera-holder.png') });
  console.log(`holder: frames ${first} then ${later}; ${await holder.textContent('#camera-fps')}`);

  const other = await signedIn(process.env.OTHER);
  await other.waitForFunction(() => document.getElementById('camera-state')?.textContent.includes('only to the holder'));
  check(!(await other.evaluate(() => document.getElementById('camera-image')?.src)), 'another student saw a picture');
  await other.screenshot({ path: join(shots, 'camera-other.png') });

  holder.on('dialog', (d) => d.accept());
  await holder.click('#end-session');
  await holder.waitForFunction(() => document.getElementById('camera-state')?.textContent.startsWith('Camera stopped: Your session on uno-1 ended'),
    null, { timeout: limit(10000) });
  console.log(`holder: ${await holder.textContent('#camera-state')}`);
  await holder.screenshot({ path: join(shots, 'camera-ended.png') });
  check(problems.length === 0, problems.join('\n'));
} finally {
  await browser.close();
}
