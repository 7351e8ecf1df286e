import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { PageBudget, beatDelayMs, outcome } from '../../static/js/page-budget.js';

const KILLED = 'This avatar is switched off for now. Please try again later.';

test('the beat interval is the server\'s, within sane bounds', () => {
  assert.equal(beatDelayMs(10), 10_000);
  assert.equal(beatDelayMs(0.1), 500);
  assert.equal(beatDelayMs(3600), 60_000);
  assert.equal(beatDelayMs(undefined), 10_000);
  assert.equal(beatDelayMs('nonsense'), 10_000);
});

test('a refusal carries the server\'s sentence; our server failing lets the call start or go on', () => {
  const refused = { go: false, reason: 'kill_switch', message: KILLED, heartbeat_seconds: 10 };
  assert.deepEqual(outcome('admit', 200, refused), { go: false, message: KILLED, beatMs: 10_000 });
  assert.deepEqual(outcome('beat', 200, { go: true, heartbeat_seconds: 12 }), { go: true, message: null, beatMs: 12_000 });
  // Unreachable (0) or failing (5xx): budgets fail open, as at the relay.
  assert.equal(outcome('admit', 0, null).go, true);
  assert.equal(outcome('beat', 503, { code: 'database_unavailable' }).go, true);
  // A request refused for itself (ended, token no longer valid): stop, with the server's message.
  const ended = outcome('beat', 409, { code: 'conversation_ended', message: 'This conversation has ended.' });
  assert.deepEqual([ended.go, ended.message], [false, 'This conversation has ended.']);
  assert.equal(outcome('admit', 401, null).go, false);
  assert.ok(outcome('admit', 401, null).message.includes('Reload'));
  // Too many questions: a Start waits; a live call is not cut for it.
  assert.equal(outcome('admit', 429, {}).go, false);
  assert.equal(outcome('beat', 429, {}).go, true);
});

let posted;
let beacons;
let answers;

beforeEach(() => {
  posted = [];
  beacons = [];
  answers = [];
  mock.timers.enable({ apis: ['setTimeout'] });
});

afterEach(() => {
  mock.timers.reset();
});

function budget() {
  return new PageBudget('tok', {
    post: async (body) => {
      posted.push(body.action);
      return answers.shift() || { status: 200, body: { go: true, heartbeat_seconds: 10 } };
    },
    beacon: (body) => beacons.push(body),
  });
}

// Let the awaited fake answers and the callbacks after them run.
async function settle() {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
}

test('a running page flushes, then beats every interval until the server says stop', async () => {
  const page = budget();
  const flushed = [];
  const stops = [];
  answers.push({ status: 200, body: { go: true, heartbeat_seconds: 2 } });
  assert.equal((await page.admit()).go, true);
  page.run({ beforeBeat: async () => flushed.push(posted.length), onStop: (message) => stops.push(message) });
  mock.timers.tick(1999);
  await settle();
  assert.deepEqual(posted, ['admit']);
  mock.timers.tick(1);
  await settle();
  assert.deepEqual(posted, ['admit', 'beat']);
  assert.deepEqual(flushed, [1]); // the transcript went first
  answers.push({ status: 200, body: { go: false, reason: 'kill_switch', message: KILLED, heartbeat_seconds: 2 } });
  mock.timers.tick(10_000); // the answer said 10 s from here on
  await settle();
  assert.deepEqual(posted, ['admit', 'beat', 'beat']);
  assert.deepEqual(stops, [KILLED]);
  mock.timers.tick(60_000);
  await settle();
  assert.equal(posted.length, 3); // stopped: no more beats
  page.end();
  assert.deepEqual(beacons, []); // the server ended it already
});

test('ending a running call beacons once and stops the beats; a beat in flight is ignored', async () => {
  const page = budget();
  const stops = [];
  page.run({ onStop: (message) => stops.push(message) });
  page.end();
  page.end();
  assert.deepEqual(beacons, [{ token: 'tok', action: 'end' }]);
  mock.timers.tick(60_000);
  await settle();
  assert.deepEqual(posted, []);

  const again = budget();
  let release;
  again.post = (body) => { posted.push(body.action); return new Promise((resolve) => { release = resolve; }); };
  again.run({ onStop: (message) => stops.push(message) });
  mock.timers.tick(10_000);
  await settle();
  assert.deepEqual(posted, ['beat']);
  again.end(); // the visitor pressed End while the beat was on its way
  release({ status: 200, body: { go: false, message: KILLED } });
  await settle();
  assert.deepEqual(stops, []);
});

test('a server that cannot be reached does not stop a live call', async () => {
  const page = budget();
  const stops = [];
  page.run({ onStop: (message) => stops.push(message) });
  answers.push({ status: 0, body: null }, { status: 502, body: null });
  mock.timers.tick(10_000);
  await settle();
  mock.timers.tick(10_000);
  await settle();
  mock.timers.tick(10_000);
  await settle();
  assert.deepEqual(posted, ['beat', 'beat', 'beat']);
  assert.deepEqual(stops, []);
});
