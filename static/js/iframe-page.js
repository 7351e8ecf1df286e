// Hosted page for the Iframe SDK: the meeting runs in a sandboxed iframe; we listen to its postMessages.
import { addTranscriptEntry, readConfig } from './conversation-ui.js';
import { reportDiagnostic, reportSdkError } from './diagnostics.js';
import { PageBudget } from './page-budget.js';
import { ENDED_MESSAGE, runPage } from './page-lifecycle.js';
import { ScorePairing } from './pronunciation-scores.js';
import { commandMatchers, matchesAny } from './visitor-state.js';

const UNREACHABLE = 'We cannot reach the avatar service. Check your connection and try again.';
const DPP_DELAY_MS = 500; // the meeting page needs a moment after showing the agent

const config = readConfig();
const meetOrigin = new URL(config.sdk.config.meetBaseUrl).origin;
// Budgets and kill switches: the relay never sees this meeting, so the page asks us before and while it runs.
const budget = new PageBudget(config.session.token);
const page = runPage({ config, createSdk, connect, typing: false, onFinish: () => budget.end() });
window.addEventListener('pagehide', () => budget.end());
const scores = new ScorePairing((entry) => page.transcript.isPending(entry));
const endMatchers = commandMatchers(config.commands);
const recording = !config.options || config.options.recordTranscript !== false;

// A fresh SDK per Start or Retry: after a failed init the SDK stays in `error` and start() does nothing.
function createSdk() {
  const avatar = new window.KalturaAvatarSDK({ clientId: config.sdk.clientId, flowId: config.sdk.flowId,
    container: '#avatar-container', config: config.sdk.config });
  if (!recording) avatar.setTranscriptEnabled(false);
  return avatar;
}

async function connect(avatar) {
  const admitted = await budget.admit();
  if (page.sdk !== avatar || page.state.phase === 'ended') return; // Retry or End meanwhile
  if (!admitted.go) {
    // Refused as the relay refuses a socket page (kill switch, minutes of the day, conversations at once):
    // the same sentence, and the meeting is never loaded.
    page.dispatch('refused', { message: admitted.message });
    page.discard();
    return;
  }
  budget.run({ beforeBeat: () => page.transcript.flush(), onStop: stopped });
  try {
    await avatar.start();
    if (page.sdk === avatar) page.dispatch('joined');
  } catch (error) {
    budget.end();
    reportSdkError(config.session.token, error);
    if (page.sdk === avatar) page.dispatch('error', { text: UNREACHABLE, recoverable: false, willRetry: false });
  }
}

// The server ended the conversation (a kill switch, a limit, an operator): the call ends, what was said is
// flushed, and the visitor reads why.
function stopped(message) {
  if (page.sdk) page.sdk.end();
  page.finish(message);
}

function recordLine(role, text) {
  addTranscriptEntry(role, text);
  scores.line(role, page.record(role, text));
}

function textOf(data, key) {
  if (typeof data === 'string') return data;
  return data && typeof data[key] === 'string' ? data[key] : '';
}

// The SDK does not check who sent a message; we only trust the meeting origin.
window.addEventListener('message', (event) => {
  if (event.origin !== meetOrigin) return;
  const message = event.data;
  if (!message || message.issuer !== 'eself-conversation-events') return;
  switch (message.event) {
    case 'showing-agent':
      page.dispatch('ready');
      setTimeout(() => { if (page.sdk && config.dpp) page.sdk.injectPrompt(JSON.stringify(config.dpp)); }, DPP_DELAY_MS);
      break;
    case 'agent-talked': {
      const text = textOf(message.data, 'agentContent');
      recordLine('Avatar', text);
      if (matchesAny(endMatchers, text)) page.endSoon();
      break;
    }
    case 'user-transcription':
      recordLine('User', textOf(message.data, 'userTranscription'));
      break;
    case 'pronunciation-score':
      scores.score(message.data);
      break;
    case 'permissions-denied':
      page.dispatch('mic-denied');
      break;
    case 'conversation-ended':
      page.finish(ENDED_MESSAGE);
      break;
    case 'load-agent-error':
      reportDiagnostic(config.session.token, 'sdk_error', 'load_agent_error');
      budget.end();
      page.dispatch('error', { text: 'The avatar could not be loaded. Please try again.', recoverable: false,
        willRetry: false });
      break;
    default:
      break;
  }
});
