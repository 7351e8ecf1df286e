import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reportDiagnostic, reportSdkError } from '../../static/js/diagnostics.js';

// What the page would have posted: fetch is replaced by a recorder (the module reads the global at call time).
const posted = [];
globalThis.fetch = async (url, options) => {
  posted.push({ url, options, body: JSON.parse(options.body) });
  return { ok: true, status: 204 };
};

test('an SDK error goes to the diagnostics endpoint as a code and a short message', () => {
  reportSdkError('TOKEN', { code: 6001, message: `No agent available ${'x'.repeat(300)}` });
  const [sent] = posted;
  assert.equal(sent.url, '/api/v1/page/diagnostics');
  assert.equal(sent.options.method, 'POST');
  assert.equal(sent.options.headers['content-type'], 'application/json');
  assert.equal(sent.body.kind, 'sdk_error');
  assert.equal(sent.body.code, '6001');
  assert.equal(sent.body.message.length, 200);
  assert.equal(sent.body.token, 'TOKEN');
});

test('codes keep only what the server accepts, and errors without a code say so', () => {
  reportSdkError('TOKEN', { name: 'Not Allowed<script>' });
  reportSdkError('TOKEN', undefined);
  assert.deepEqual(posted.slice(1).map((p) => p.body.code), ['Not_Allowed_script_', 'unknown']);
});

test('without a token nothing is sent, and a page sends at most ten reports', () => {
  const before = posted.length;
  reportDiagnostic('', 'end', 'visitor_ended');
  assert.equal(posted.length, before);
  for (let i = 0; i < 20; i++) reportDiagnostic('TOKEN', 'end', 'visitor_ended');
  assert.equal(posted.length, 10);
});
