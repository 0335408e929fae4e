// Measures what a browser transfers on its first visit (empty cache): the
// sign-in page, and the boards overview of a signed-in student. Prints one
// JSON line per page: requests, bytes on the wire (headers and compressed
// bodies) and bytes of bodies as served. Started by tests/web/bench.sh.

import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(root, 'target/web-tests/package.json'));
const { chromium } = require('playwright-core');

const url = process.env.APP_URL;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });

/** Loads `url` in a fresh context (with `storage`, if given) and sums its requests. */
async function measure(name, storage) {
  const context = await browser.newContext(storage ? { storageState: storage } : {});
  const page = await context.newPage();
  const requests = [];
  page.on('requestfinished', (r) => requests.push(r));
  await page.goto(url, { waitUntil: 'networkidle' });
  let wire = 0;
  let body = 0;
  for (const r of requests) {
    const sizes = await r.sizes();
    wire += sizes.responseHeadersSize + sizes.responseBodySize;
    body += sizes.responseBodySize;
  }
  console.log(JSON.stringify({ page: name, requests: requests.length, wire_bytes: wire, body_bytes: body }));
  const state = await context.storageState();
  await context.close();
  return { page, state };
}

await measure('sign-in (signed out)');
// A signed-in student: register and sign in once, then load afresh.
const context = await browser.newContext();
const page = await context.newPage();
await page.goto(url);
await page.getByLabel('E-mail').fill(`bench-${Date.now()}@example.com`);
await page.getByLabel('Password').fill('plum-orbit-cactus-41');
await page.click('#register');
await page.waitForSelector('.cards .board');
const storage = await context.storageState();
await context.close();
await measure('boards overview (signed in)', storage);
await browser.close();
