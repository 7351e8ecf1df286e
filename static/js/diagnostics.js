// Reports to the conversation's diagnostics timeline what an operator needs when a visitor says "it didn't
// connect": the SDK's errors and how the visitor ended the call. Best effort: a failed report is dropped,
// never retried, never shown. Never sends transcript text: a code and a short message only.
const ENDPOINT = '/api/v1/page/diagnostics';
const MAX_MESSAGE = 200;
const MAX_REPORTS = 10; // per page view; the server limits per conversation too

let sent = 0;

export function reportDiagnostic(token, kind, code, message = '') {
  if (!token || sent >= MAX_REPORTS) return;
  sent += 1;
  const safeCode = String(code ?? 'unknown').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 64) || 'unknown';
  const body = JSON.stringify({ token, kind, code: safeCode, message: String(message ?? '').slice(0, MAX_MESSAGE) });
  fetch(ENDPOINT, { method: 'POST', keepalive: true, headers: { 'content-type': 'application/json' }, body })
    .catch(() => { /* offline: the timeline goes without it */ });
}

export function reportSdkError(token, error) {
  const code = error && error.code !== undefined ? error.code : (error && error.name) || 'unknown';
  reportDiagnostic(token, 'sdk_error', code, error && error.message);
}
