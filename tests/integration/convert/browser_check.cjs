// Drives Debian's Chromium (headless, through playwright-core) through the `tfsctl web` page:
// waits for the model to load, types or uploads an input, clicks Predict and reports what the
// page shows. JSON request on stdin:
//   {"url": ..., "input": "<typed text>" | null, "upload": "<file path>" | null,
//    "timeout_ms": 60000, "screenshot": "<png path>" | null}
// JSON answer on stdout: {"state", "status", "raw", "backend", "top1", "requests", "offsite", "console"}
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

async function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  const timeout = request.timeout_ms || 60000;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfso-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    timeout,
  });
  const answer = { requests: [], offsite: [], console: [] };
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(timeout);
    page.on('request', (r) => {
      answer.requests.push(r.url());
      const host = new URL(r.url()).hostname;
      if (!['127.0.0.1', 'localhost', '[::1]'].includes(host) && !r.url().startsWith('data:')) {
        answer.offsite.push(r.url());
      }
    });
    page.on('console', (m) => answer.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => answer.console.push(`pageerror: ${e.message}`));
    await page.goto(request.url);
    await page.waitForSelector('#status[data-state="ready"], #status[data-state="error"]');
    if (request.upload) {
      await page.setInputFiles('#file', request.upload);
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('loaded')
        || document.getElementById('status').dataset.state === 'error');
    } else if (request.input !== undefined && request.input !== null) {
      await page.fill('#input', request.input);
    }
    if ((await page.getAttribute('#status', 'data-state')) !== 'error') {
      await page.click('#predict');
      await page.waitForSelector('#status[data-state="done"], #status[data-state="error"]');
    }
    answer.state = await page.getAttribute('#status', 'data-state');
    answer.status = await page.textContent('#status');
    answer.raw = await page.textContent('#raw');
    answer.backend = await page.textContent('#backend');
    answer.top1 = await page.$$eval('td.top1', (cells) => cells.map((c) => Number(c.textContent)));
    if (request.screenshot) await page.screenshot({ path: request.screenshot, fullPage: true });
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(answer));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
