// Hosted page for the Iframe SDK: the meeting runs in a sandboxed iframe; we listen to its postMessages.
import {
  addTranscriptEntry, readConfig, setConversationControls, setStatus, showError,
} from './conversation-ui.js';
import { reportDiagnostic, reportSdkError } from './diagnostics.js';
import { ENDED_MESSAGE, runPage } from './page-lifecycle.js';
import { ScorePairing } from './pronunciation-scores.js';

const UNREACHABLE = 'We cannot reach the avatar service. Check your connection and try again.';
const DPP_DELAY_MS = 500; // the meeting page needs a moment after showing the agent

const config = readConfig();
const $ = (id) => document.getElementById(id);
const meetOrigin = new URL(config.sdk.config.meetBaseUrl).origin;
const page = runPage({ config, createSdk, connect });
const scores = new ScorePairing((entry) => page.transcript.isPending(entry));

function createSdk() {
  const avatar = new window.KalturaAvatarSDK({ clientId: config.sdk.clientId, flowId: config.sdk.flowId,
    container: '#avatar-container', config: config.sdk.config });
  avatar.on('error', (error) => {
    reportSdkError(config.session.token, error);
    showError(UNREACHABLE);
  });
  return avatar;
}

async function connect(avatar) {
  setStatus('Connecting to the avatar…');
  try {
    await avatar.start();
    setConversationControls(true);
  } catch {
    $('start').disabled = false;
    showError(UNREACHABLE);
  }
}

function recordLine(role, text) {
  addTranscriptEntry(role, text);
  scores.line(role, page.transcript.add(role, text));
}

function textOf(data, key) {
  if (typeof data === 'string') return data;
  return data && typeof data[key] === 'string' ? data[key] : '';
}

function endsWithCommand(text) {
  const lower = text.toLowerCase();
  return (config.commands || []).some((c) => c.action === 'end' && lower.includes(c.phrase.toLowerCase()));
}

// The SDK does not check who sent a message; we only trust the meeting origin.
window.addEventListener('message', (event) => {
  if (event.origin !== meetOrigin) return;
  const message = event.data;
  if (!message || message.issuer !== 'eself-conversation-events') return;
  switch (message.event) {
    case 'showing-agent':
      setStatus('In conversation.');
      setTimeout(() => { if (page.sdk && config.dpp) page.sdk.injectPrompt(JSON.stringify(config.dpp)); }, DPP_DELAY_MS);
      break;
    case 'agent-talked': {
      const text = textOf(message.data, 'agentContent');
      recordLine('Avatar', text);
      if (endsWithCommand(text)) page.endSoon();
      break;
    }
    case 'user-transcription':
      recordLine('User', textOf(message.data, 'userTranscription'));
      break;
    case 'pronunciation-score':
      scores.score(message.data);
      break;
    case 'permissions-denied':
      setStatus('Microphone unavailable: use the text box inside the avatar window.');
      break;
    case 'conversation-ended':
      page.finish(ENDED_MESSAGE);
      break;
    case 'load-agent-error':
      reportDiagnostic(config.session.token, 'sdk_error', 'load_agent_error');
      showError('The avatar could not be loaded. Please try again later.');
      break;
    default:
      break;
  }
});
