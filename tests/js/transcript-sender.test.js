import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { TranscriptSender } from '../../static/js/transcript-sender.js';

const ENDPOINT = '/api/v1/page/transcript';
const BEACON_BUDGET = 32 * 1024;

// A fake server behind fetch and sendBeacon: it records what the page sent and answers with
// `holds(batch)` as the highest contiguous seq it stores (by default, everything it was sent).
let requests;
let beacons;
let holds;
let failWith;

beforeEach(() => {
  requests = [];
  beacons = [];
  holds = (batch) => Math.max(0, ...batch.entries.map((entry) => entry.seq));
  failWith = null;
  mock.timers.enable({ apis: ['setTimeout'] });
  globalThis.fetch = async (url, init) => {
    const batch = JSON.parse(init.body);
    requests.push({ url, method: init.method, batch });
    if (failWith === 'offline') throw new TypeError('Failed to fetch');
    if (failWith === 'error') return { ok: false, status: 503, json: async () => ({ code: 'unavailable' }) };
    if (typeof failWith === 'number') return { ok: false, status: failWith, json: async () => ({ code: 'refused' }) };
    return { ok: true, json: async () => ({ highest_seq: holds(batch), stored: batch.entries.length }) };
  };
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    writable: true,
    value: { sendBeacon: (url, blob) => { beacons.push({ url, blob }); return true; } },
  });
});

afterEach(() => {
  mock.timers.reset();
});

const seqs = (batch) => batch.entries.map((entry) => entry.seq);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const settle = () => new Promise((resolve) => setImmediate(resolve));

async function beaconBodies() {
  return Promise.all(beacons.map(async ({ url, blob }) => {
    assert.equal(url, ENDPOINT);
    assert.equal(blob.type, 'application/json');
    return { size: blob.size, batch: JSON.parse(await blob.text()) };
  }));
}

function sender(lines = 0, text = (n) => `line ${n}`) {
  const s = new TranscriptSender('tok-1');
  for (let n = 1; n <= lines; n++) s.add(n % 2 ? 'Avatar' : 'User', text(n), new Date(Date.UTC(2024, 0, 1, 12, 0, n)));
  return s;
}

test('lines said within a second go out together in one request', async () => {
  const s = sender();
  s.add('Avatar', 'Hello! How can I help?', new Date('2024-01-01T12:00:00Z'));
  mock.timers.tick(500);
  s.add('User', 'Show me a chart', new Date('2024-01-01T12:00:01Z'));
  mock.timers.tick(999);
  assert.equal(requests.length, 0);
  mock.timers.tick(1);
  assert.equal(requests.length, 1);
  const [{ url, method, batch }] = requests;
  assert.equal(url, ENDPOINT);
  assert.equal(method, 'POST');
  assert.deepEqual(batch, {
    token: 'tok-1',
    entries: [
      { seq: 1, role: 'Avatar', text: 'Hello! How can I help?', timestamp: '2024-01-01T12:00:00.000Z' },
      { seq: 2, role: 'User', text: 'Show me a chart', timestamp: '2024-01-01T12:00:01.000Z' },
    ],
  });
  assert.equal(batch.final, undefined);
});

test('a request carries at most 200 lines; the rest follow once the server holds them', async () => {
  const s = sender(450);
  await s.flush();
  await s.flush();
  await s.flush();
  await s.flush();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [range(1, 200), range(201, 400), range(401, 450)]);
});

test('the page resends from the highest seq the server says it holds', async () => {
  const s = sender(5);
  holds = () => 3; // the server lost 4 and 5 (or never saw them)
  await s.flush();
  holds = (batch) => Math.max(...seqs(batch));
  await s.flush();
  await s.flush();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [range(1, 5), [4, 5]]);
});

test('lines the server has not confirmed are sent again by themselves, three seconds later', async () => {
  sender(3);
  holds = () => 1;
  mock.timers.tick(1000);
  await settle();
  holds = (batch) => Math.max(...seqs(batch));
  mock.timers.tick(2999);
  assert.equal(requests.length, 1);
  mock.timers.tick(1);
  await settle();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [[1, 2, 3], [2, 3]]);
  mock.timers.tick(10_000);
  assert.equal(requests.length, 2, 'nothing left to retry');
});

test('a failed request loses nothing: offline or a server error, the next flush sends it all again', async () => {
  const s = sender(2);
  failWith = 'offline';
  await s.flush();
  failWith = 'error';
  await s.flush();
  failWith = null;
  await s.flush();
  await s.flush();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [[1, 2], [1, 2], [1, 2]]);
});

test('a refusal resending cannot change stops the sending, but closing still ends the session', async () => {
  for (const status of [409, 413]) {
    requests = [];
    beacons = [];
    const s = sender(2);
    failWith = status;
    mock.timers.tick(1000);
    await settle();
    mock.timers.tick(60_000);
    await settle();
    assert.equal(requests.length, 1, `no retry after a ${status}`);
    assert.equal(s.add('User', 'one more'), null);
    s.close();
    const [only] = await beaconBodies();
    assert.deepEqual(only.batch.entries, []);
    assert.equal(only.batch.final, true);
  }
});

test('a rate limit is tried again', async () => {
  sender(2);
  failWith = 429;
  mock.timers.tick(1000);
  await settle();
  failWith = null;
  mock.timers.tick(3000);
  await settle();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [[1, 2], [1, 2]]);
});

test('an entry can still be changed until the server holds it', async () => {
  const s = sender();
  const entry = s.add('User', 'bye');
  assert.equal(s.isPending(entry), true);
  await s.flush();
  assert.equal(s.isPending(entry), false);
});

test('closing sends every pending line by beacon, each within budget, and only the last one is final', async () => {
  const s = sender(100, (n) => `${n} `.padEnd(1000, 'x'));
  s.close(true);
  const sent = await beaconBodies();
  assert.ok(sent.length >= 4, `about 100 KB needs several beacons, got ${sent.length}`);
  for (const { size, batch } of sent) {
    assert.ok(size <= BEACON_BUDGET, `a beacon of ${size} bytes`);
    assert.equal(batch.token, 'tok-1');
  }
  assert.deepEqual(sent.flatMap(({ batch }) => seqs(batch)), range(1, 100));
  assert.deepEqual(sent.map(({ batch }) => batch.final), [...Array(sent.length - 1).fill(false), true]);
  mock.timers.tick(5000);
  assert.equal(requests.length, 0, 'the batching timer was stopped');
});

test('the beacon budget counts bytes, so lines in non-Latin scripts are not lost to an oversized beacon', async () => {
  const s = sender(40, () => '語'.repeat(1000)); // 3 bytes a character once encoded
  s.close(true);
  const sent = await beaconBodies();
  for (const { size } of sent) assert.ok(size <= BEACON_BUDGET, `a beacon of ${size} bytes`);
  assert.deepEqual(sent.flatMap(({ batch }) => seqs(batch)), range(1, 40));
});

test('closing with nothing pending still sends one final beacon: that is what ends the session', async () => {
  const s = sender();
  s.close(true);
  const sent = await beaconBodies();
  assert.deepEqual(sent.map(({ batch }) => batch), [{ token: 'tok-1', entries: [], final: true }]);
});

test('once closed for good, the sender takes no more lines and sends nothing more', async () => {
  const s = sender(1);
  s.close(true);
  assert.equal(s.add('User', 'too late'), null);
  s.close(true);
  mock.timers.tick(5000);
  assert.equal(beacons.length, 1);
  assert.equal(requests.length, 0);
});

test('a non-final close sends what is pending and keeps the conversation going', async () => {
  const s = sender(2);
  s.close(false);
  const third = s.add('Avatar', 'still here');
  assert.equal(third.seq, 3);
  s.close(true);
  const sent = await beaconBodies();
  assert.deepEqual(sent.map(({ batch }) => [seqs(batch), batch.final]), [[[1, 2], false], [[1, 2, 3], true]]);
});

test('leaving the page sends the final beacon; hiding it sends pending lines without ending', async () => {
  const page = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
  globalThis.window = page;
  globalThis.document = doc;
  try {
    const s = sender(1);
    s.watchPageLifecycle();
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await s.flush(); // back in view: the server confirms line 1
    doc.dispatchEvent(new Event('visibilitychange')); // hidden again with nothing pending: no beacon
    page.dispatchEvent(new Event('pagehide'));
    const sent = await beaconBodies();
    assert.deepEqual(sent.map(({ batch }) => [seqs(batch), batch.final]), [[[1], false], [[], true]]);
  } finally {
    delete globalThis.window;
    delete globalThis.document;
  }
});

test('status() asks even with nothing pending, sends what is pending, and gives back the answer', async () => {
  const sender = new TranscriptSender('tok');
  const idle = await sender.status();
  assert.deepEqual(requests.map((r) => seqs(r.batch)), [[]]);
  assert.equal(idle.highest_seq, 0);
  sender.add('User', 'hello');
  const answer = await sender.status();
  assert.deepEqual(seqs(requests[1].batch), [1]);
  assert.equal(answer.highest_seq, 1);
  assert.equal(sender.pending.length, 0); // acknowledged: not sent again
  failWith = 'offline';
  assert.equal(await sender.status(), null);
  failWith = 409;
  assert.equal(await sender.status(), null);
});
