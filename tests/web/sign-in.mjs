// Signs a student in inside an already running chromium (its DevTools port
// in CDP_PORT) and books the slot in progress on DEVICE, so that Lighthouse,
// run against the same browser with its storage kept, scores the pages
// behind the sign-in: the app keeps its token in the origin's localStorage,
// which a header or a cookie given to Lighthouse would not reach. With the
// argument `clear-cache` it only empties the browser's HTTP cache (keeping
// localStorage), so each Lighthouse run is a first visit. Started by
// tests/web/bench.sh.

import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(root, 'target/web-tests/package.json'));
const { chromium } = require('playwright-core');

const url = process.env.APP_URL;
const device = process.env.DEVICE;
const browser = await chromium.connectOverCDP(`http://127.0.0.1:${process.env.CDP_PORT}`);
const page = await browser.contexts()[0].newPage();
page.setDefaultTimeout(15000);
const cdp = await browser.contexts()[0].newCDPSession(page);
await cdp.send('Network.clearBrowserCache');
if (process.argv[2] === 'clear-cache') process.exit(0);
await page.goto(url);
await page.getByLabel('E-mail').fill(`bench-${Date.now()}@example.com`);
await page.getByLabel('Password').fill('plum-orbit-cactus-41');
await page.click('#register');
await page.waitForSelector('.cards .board');
await page.goto(`${url}#/board/${device}`);
await page.click('li.slot.now button');
await page.waitForSelector('li.slot.now[data-state="mine"]');
await page.close();
// Leaves the browser running for Lighthouse: only this connection ends.
process.exit(0);
