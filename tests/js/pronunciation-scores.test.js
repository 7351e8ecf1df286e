import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAIRING_MS, ScorePairing, readScore } from '../../static/js/pronunciation-scores.js';

// A pairing on a clock the test moves; `sent` holds the entries the sender has already posted.
function setUp() {
  const clock = { now: 1_000_000 };
  const sent = new Set();
  const pairing = new ScorePairing((entry) => !sent.has(entry), () => clock.now);
  return { clock, sent, pairing };
}

const line = (text) => ({ text });

test('a score that follows its User line goes on that line', () => {
  const { clock, pairing } = setUp();
  const said = line('show me a table');
  pairing.line('User', said);
  clock.now += 800;
  pairing.score({ pronunciationScore: 87 });
  assert.equal(said.pronunciation_score, 87);
});

test('a score that comes first waits for the next User line', () => {
  const { clock, pairing } = setUp();
  pairing.score(64);
  clock.now += 1000;
  const avatar = line('Here is a table.');
  pairing.line('Avatar', avatar);
  const said = line('bye');
  pairing.line('User', said);
  assert.equal(avatar.pronunciation_score, undefined);
  assert.equal(said.pronunciation_score, 64);
});

test('a held score is used once, not on every later line', () => {
  const { pairing } = setUp();
  pairing.score(64);
  const first = line('one');
  const second = line('two');
  pairing.line('User', first);
  pairing.line('User', second);
  assert.equal(first.pronunciation_score, 64);
  assert.equal(second.pronunciation_score, undefined);
});

test('a line already sent is left alone: its score goes on the next User line', () => {
  const { sent, pairing } = setUp();
  const earlier = line('show me a chart');
  pairing.line('User', earlier);
  sent.add(earlier);
  pairing.score(70);
  const next = line('bye');
  pairing.line('User', next);
  assert.equal(earlier.pronunciation_score, undefined);
  assert.equal(next.pronunciation_score, 70);
});

test('a line keeps its first score; a second one waits for the next line', () => {
  const { pairing } = setUp();
  const said = line('hello');
  pairing.line('User', said);
  pairing.score(50);
  pairing.score(90);
  const next = line('again');
  pairing.line('User', next);
  assert.equal(said.pronunciation_score, 50);
  assert.equal(next.pronunciation_score, 90);
});

test('scores and lines too far apart are not paired', () => {
  const { clock, pairing } = setUp();
  const old = line('long ago');
  pairing.line('User', old);
  clock.now += PAIRING_MS;
  pairing.score(40); // too late for `old`: held instead
  clock.now += PAIRING_MS;
  const later = line('much later');
  pairing.line('User', later); // too late for the held score
  assert.equal(old.pronunciation_score, undefined);
  assert.equal(later.pronunciation_score, undefined);
});

test('a line the sender refused (no entry) neither takes nor drops a held score', () => {
  const { pairing } = setUp();
  pairing.score(75);
  pairing.line('User', null);
  const said = line('hi');
  pairing.line('User', said);
  assert.equal(said.pronunciation_score, 75);
});

test('scores are read from a number or { pronunciationScore }, rounded and kept within 0-100', () => {
  assert.equal(readScore(72.4), 72);
  assert.equal(readScore({ pronunciationScore: 72.6 }), 73);
  assert.equal(readScore(130), 100);
  assert.equal(readScore(-5), 0);
  for (const junk of [null, undefined, '80', {}, { pronunciationScore: '80' }, NaN, Infinity]) {
    assert.equal(readScore(junk), null, `${String(junk)} is not a score`);
  }
});

test('something that is not a score changes nothing', () => {
  const { pairing } = setUp();
  const said = line('hello');
  pairing.line('User', said);
  pairing.score('80');
  pairing.score(55);
  assert.equal(said.pronunciation_score, 55);
});
