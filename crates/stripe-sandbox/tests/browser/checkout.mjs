// Pays a stripe-sandbox hosted Checkout page in headless Chromium, as a person would.
//
// Usage: node checkout.mjs '<spec json>'
//   {
//     "url": "http://127.0.0.1:PORT/c/pay/cs_test_...",   the hosted page (session.url)
//     "card": "4242424242424242",                           the card number to type
//     "expect": "success" | "declined",
//     "success_prefix": "http://127.0.0.1:RPORT/success",  where success must land
//     "email": "guest@example.com",                         optional: typed if the page asks
//     "screenshot": "/tmp/checkout.png"                     optional: saved at the end
//   }
// Prints one JSON line on stdout:
//   success:  {"final_url": "..."}
//   declined: {"error": "<text of #error>", "final_url": "..."}
// Exits non-zero, with the reason on stderr, on any failure.
//
// Needs /usr/bin/chromium and `npm ci` in this folder (see scripts/install-browser-deps.sh).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// Each step's limit; the Rust test gives the whole run 60 s.
const STEP_TIMEOUT_MS = 15_000;
const ITEM = 'Course';
const TOTAL = '25.00 USD';

function fail(message) {
  throw new Error(message);
}

function readSpec() {
  const raw = process.argv[2];
  if (!raw) fail("usage: node checkout.mjs '<spec json>'");
  let spec;
  try {
    spec = JSON.parse(raw);
  } catch (e) {
    fail(`the spec is not JSON: ${e.message}`);
  }
  for (const key of ['url', 'card', 'expect']) {
    if (typeof spec[key] !== 'string' || spec[key] === '') fail(`the spec needs "${key}"`);
  }
  if (spec.expect !== 'success' && spec.expect !== 'declined') {
    fail(`"expect" must be "success" or "declined", not ${JSON.stringify(spec.expect)}`);
  }
  if (spec.expect === 'success' && typeof spec.success_prefix !== 'string') {
    fail('the spec needs "success_prefix" when "expect" is "success"');
  }
  return spec;
}

async function checkSummary(page) {
  const item = page.locator('tr.line-item', { hasText: ITEM });
  try {
    await item.first().waitFor({ state: 'visible' });
  } catch {
    fail(`no visible line item "${ITEM}" on ${page.url()}`);
  }
  const itemText = (await item.first().innerText()).replace(/\s+/g, ' ');
  if (!itemText.includes(TOTAL)) fail(`the line item reads "${itemText}", not ${TOTAL}`);
  const total = page.locator('#total');
  if (!(await total.isVisible())) fail('no visible total (#total)');
  const totalText = (await total.innerText()).trim();
  if (totalText !== TOTAL) fail(`the total reads "${totalText}", not "${TOTAL}"`);
}

async function fillAndSubmit(page, spec) {
  // A guest is asked for an email; a known customer's email is shown as text.
  const email = page.locator('input#email');
  if ((await email.count()) > 0) await email.fill(spec.email ?? 'guest@example.com');
  await page.locator('#card_number').fill(spec.card);
  await page.locator('#card_expiry').fill('12 / 34');
  await page.locator('#card_cvc').fill('123');
  await page.locator('#submit').click();
}

async function run(spec, page) {
  const response = await page.goto(spec.url);
  if (!response || !response.ok()) {
    fail(`GET ${spec.url} answered ${response ? response.status() : 'nothing'}`);
  }
  await checkSummary(page);

  if (spec.expect === 'success') {
    // Whichever comes first: the success URL, or the page coming back with an error.
    const landed = page
      .waitForURL((url) => url.href.startsWith(spec.success_prefix))
      .then(() => 'landed', () => 'timeout');
    const refused = page
      .locator('#error')
      .waitFor({ state: 'visible' })
      .then(() => 'error', () => 'timeout');
    await fillAndSubmit(page, spec);
    if ((await Promise.race([landed, refused])) !== 'landed') {
      const error = await page.locator('#error').allInnerTexts();
      fail(
        `did not land on ${spec.success_prefix}...; still on ${page.url()}` +
          (error.length ? ` showing "${error.join(' ')}"` : ''),
      );
    }
    return { final_url: page.url() };
  }

  // Declined: the same page comes back with the reason, and nothing is left.
  await fillAndSubmit(page, spec);
  const error = page.locator('#error');
  try {
    await error.waitFor({ state: 'visible' });
  } catch {
    fail(`no visible #error after submitting; on ${page.url()}`);
  }
  if (spec.success_prefix && page.url().startsWith(spec.success_prefix)) {
    fail(`a declined card landed on the success URL ${page.url()}`);
  }
  return { error: (await error.innerText()).trim(), final_url: page.url() };
}

async function main() {
  const spec = readSpec();
  const profile = await mkdtemp(join(tmpdir(), 'stripe-sandbox-chromium-'));
  let context;
  try {
    // A persistent context is how Playwright takes a --user-data-dir of one's own: a
    // fresh, empty one per run.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      timeout: STEP_TIMEOUT_MS,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));

    let result;
    try {
      result = await run(spec, page);
    } catch (e) {
      const extra = pageErrors.length ? ` (page errors: ${pageErrors.join('; ')})` : '';
      e.message += extra;
      throw e;
    } finally {
      if (spec.screenshot) {
        await page.screenshot({ path: spec.screenshot, fullPage: true }).catch((e) => {
          console.error(`checkout.mjs: could not save the screenshot: ${e.message}`);
        });
      }
    }
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
}

main().catch((e) => {
  console.error(`checkout.mjs: ${e.message}`);
  process.exit(1);
});
