import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  commandMatchers, describe, initialState, matchesAny, peerNameFrom, reduce, relayRefusal,
} from '../../static/js/visitor-state.js';

// Runs events through the reducer, as the page does, from a started call.
function run(events, options = {}) {
  let state = reduce(initialState(options), 'start');
  for (const [event, data, now] of events) state = reduce(state, event, data, now || 0);
  return state;
}

test('a call that comes up shows it is live, then who is speaking and what the visitor is saying', () => {
  let state = run([['connecting'], ['joined']]);
  assert.equal(describe(state).status, 'The avatar is getting ready…');
  state = run([['joined'], ['ready'], ['avatar-speaking-start'], ['user-speech', { text: 'I would like', isFinal: false }]]);
  const view = describe(state);
  assert.equal(view.active, true);
  assert.equal(view.speaking, true);
  assert.equal(view.interim, 'I would like');
  state = reduce(reduce(state, 'avatar-speaking-end'), 'user-speech', { text: 'I would like tea', isFinal: true });
  assert.equal(describe(state).speaking, false);
  assert.equal(describe(state).interim, '');
});

test('the relay\'s own reason is shown for a refused connection, and Retry is offered', () => {
  const refused = { code: 1001, message: 'This conversation has ended. Reload the page to start again.' };
  assert.equal(relayRefusal(refused), refused.message);
  const view = describe(run([['refused', { message: relayRefusal(refused) }]]));
  assert.equal(view.error, refused.message);
  assert.equal(view.retry, true);
  assert.equal(view.active, false);
});

test('network failures are not mistaken for refusals', () => {
  assert.equal(relayRefusal({ code: 1001, message: 'xhr poll error' }), null);
  assert.equal(relayRefusal({ code: 1001, message: 'websocket error' }), null);
  assert.equal(relayRefusal({ code: 1002, message: 'Connection timed out after 15000ms' }), null);
  assert.equal(relayRefusal(null), null);
});

test('reconnecting counts attempts, and exhaustion says so and offers Retry', () => {
  let state = run([['ready'], ['error', { code: 1003, text: 'lost', willRetry: true }], ['reconnecting', { attempt: 1, maxAttempts: 2 }]]);
  assert.equal(describe(state).status, 'Connection lost. Reconnecting (attempt 1 of 2)…');
  assert.equal(describe(state).retry, false);
  state = reduce(state, 'error', { code: 1001, text: 'x', willRetry: true });
  state = reduce(state, 'reconnecting', { attempt: 2, maxAttempts: 2 });
  state = reduce(state, 'error', { code: 1001, text: 'x', willRetry: false });
  const view = describe(state);
  assert.equal(view.status, 'Reconnecting failed.');
  assert.match(view.error, /could not reconnect/);
  assert.equal(view.retry, true);
});

test('a lost call says so at once, before the SDK\'s first reconnect attempt', () => {
  const view = describe(run([['ready'], ['avatar-speaking-start'], ['error', { code: 1003, text: 'lost', willRetry: true }]]));
  assert.equal(view.status, 'Connection lost. Reconnecting…');
  assert.equal(view.active, false);
  assert.equal(view.speaking, false);
  assert.equal(view.error, null);
});

test('a successful reconnect clears the reconnecting state', () => {
  const state = run([['ready'], ['reconnecting', { attempt: 1, maxAttempts: 5 }], ['reconnected']]);
  assert.equal(describe(state).active, true);
  assert.equal(describe(state).retry, false);
});

test('queue: the wait, the next check and the limit are shown; a time-out offers Retry', () => {
  let state = run([['queue-started'], ['queue-position-check', { attempt: 2, waitedMs: 75000, nextCheckMs: 45000 }]],
    { queueMaxWaitMs: 300000 });
  assert.equal(describe(state).status,
    'All avatars are busy: you are in the queue. Waited 1 min 15 s; checking again in 45 s. We give up after 5 min.');
  state = reduce(state, 'queue-timeout');
  assert.match(describe(state).error, /waited too long/);
  assert.equal(describe(state).retry, true);
});

test('audio fallback: a notice while it comes up, and a clear failure if it hangs', () => {
  let state = run([['joined'], ['audio-fallback']]);
  assert.deepEqual(describe(state).notices, ['Video unavailable — audio only.']);
  const hung = reduce(state, 'audio-fallback-timeout');
  assert.equal(describe(hung).retry, true);
  assert.match(describe(hung).error, /audio connection could not be set up/);
  state = reduce(state, 'ready');
  assert.equal(reduce(state, 'audio-fallback-timeout'), state); // up in time: the timer changes nothing
  assert.deepEqual(describe(state).notices, ['Video unavailable — audio only.']);
});

test('an audio-only flow says so from the start, and its audio has a time-out too', () => {
  assert.deepEqual(describe(initialState({ audioOnly: true })).notices, ['Audio only: this avatar speaks without video.']);
  const joined = run([['joined']], { audioOnly: true });
  assert.equal(describe(reduce(joined, 'audio-fallback-timeout')).retry, true);
  assert.equal(describe(reduce(reduce(joined, 'ready'), 'audio-fallback-timeout')).retry, false);
});

test('a denied microphone explains the text-only mode', () => {
  const view = describe(run([['mic-denied'], ['ready']]));
  assert.match(view.notices[0], /text conversation/);
  assert.equal(view.status, 'In conversation. Type below.');
});

test('without a text box of its own (iframe) the page does not promise typing', () => {
  const view = describe(run([['mic-denied'], ['ready'], ['ended'], ['start'], ['mic-denied'], ['ready']],
    { typing: false }));
  assert.deepEqual(view.notices, ['Your microphone is off or blocked, so the avatar cannot hear you. To talk, '
    + 'allow the microphone for this site and reload the page.']);
  assert.equal(view.status, 'In conversation.');
});

test('time remaining counts down from the SDK\'s warning', () => {
  const state = run([['ready'], ['time-warning', { remainingSeconds: 90 }, 1000]]);
  assert.equal(describe(state, 1000).remaining, 'Time remaining: 1 min 30 s.');
  assert.equal(describe(state, 61000).remaining, 'Time remaining: 30 s.');
  assert.equal(describe(state, 500000).remaining, 'Time remaining: 0 s.');
  assert.equal(describe(reduce(state, 'ended'), 1000).remaining, null);
});

test('an error the SDK recovers from by itself shows nothing; a live error keeps the call', () => {
  assert.equal(describe(run([['error', { code: 1001, text: 'x', willRetry: true }]])).error, null);
  const view = describe(run([['ready'], ['error', { code: 3001, text: 'Not now.', recoverable: true }]]));
  assert.equal(view.active, true);
  assert.equal(view.error, 'Not now.');
  assert.equal(view.retry, false);
});

test('spoken commands: every phrase and every pattern ends the call, case-insensitively', () => {
  const matchers = commandMatchers([
    { phrase: 'Ending call now.', action: 'end' },
    { phrase: 'Goodbye for now', action: 'end' },
    { pattern: '\\b(farewell|see you)\\b', action: 'end' },
    { pattern: '(unclosed', action: 'end' }, // a bad row is skipped, not fatal
  ]);
  assert.equal(matchers.length, 3);
  assert.ok(matchesAny(matchers, 'OK. ending call now.'));
  assert.ok(matchesAny(matchers, 'Goodbye for now!'));
  assert.ok(matchesAny(matchers, 'Well, See you soon'));
  assert.ok(!matchesAny(matchers, 'seeing you is nice'));
});

test('peerName comes from the configured visitor field, bounded and cleaned', () => {
  assert.equal(peerNameFrom('?first_name=Ana', 'first_name'), 'Ana');
  assert.equal(peerNameFrom('?first_name=Ana', null), 'Visitor');
  assert.equal(peerNameFrom('?other=1', 'first_name'), 'Visitor');
  assert.equal(peerNameFrom(`?first_name=${'x'.repeat(100)}`, 'first_name').length, 60);
  assert.equal(peerNameFrom('?first_name=%00%0A', 'first_name'), 'Visitor');
});

test('an error that cannot recover (the iframe meeting failed to load) offers Retry, even mid-call', () => {
  const view = describe(run([['ready'], ['error', { text: 'The avatar could not be loaded.', recoverable: false }]]));
  assert.equal(view.active, false);
  assert.equal(view.retry, true);
  assert.equal(view.error, 'The avatar could not be loaded.');
});
