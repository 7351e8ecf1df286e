// Hosted page for the Iframe SDK: the meeting runs in a sandboxed iframe; we listen to its postMessages.
import {
  addTranscriptEntry, clearError, readConfig, sdkMissingMessage,
  setConversationControls, setStatus, showError,
} from './conversation-ui.js';
import { TranscriptSender } from './transcript-sender.js';

const config = readConfig();
const transcript = new TranscriptSender(config.session.token);
transcript.watchPageLifecycle();

// A pronunciation score belongs to one User line, but the SDK does not say in which order the two
// arrive: a score goes on the User line just recorded if it is still unsent, otherwise on the next one.
const SCORE_PAIRING_MS = 5000;
let lastUser = null; // { entry, at }
let heldScore = null; // { score, at }

function recordLine(role, text) {
  addTranscriptEntry(role, text);
  const entry = transcript.add(role, text);
  if (role !== 'User' || !entry) return;
  lastUser = { entry, at: Date.now() };
  if (heldScore && Date.now() - heldScore.at < SCORE_PAIRING_MS) entry.pronunciation_score = heldScore.score;
  heldScore = null;
}

function recordScore(data) {
  const raw = typeof data === 'number' ? data : data && data.pronunciationScore;
  if (typeof raw !== 'number' || !Number.isFinite(raw)) return;
  const score = Math.round(Math.min(100, Math.max(0, raw)));
  const recent = lastUser && Date.now() - lastUser.at < SCORE_PAIRING_MS;
  if (recent && lastUser.entry.pronunciation_score === undefined && transcript.isPending(lastUser.entry)) {
    lastUser.entry.pronunciation_score = score;
  } else {
    heldScore = { score, at: Date.now() };
  }
}
const $ = (id) => document.getElementById(id);
const meetOrigin = new URL(config.sdk.config.meetBaseUrl).origin;
const DPP_DELAY_MS = 500; // the meeting page needs a moment after showing the agent
let sdk = null;

function textOf(data, key) {
  if (typeof data === 'string') return data;
  return data && typeof data[key] === 'string' ? data[key] : '';
}

function endsWithCommand(text) {
  const lower = text.toLowerCase();
  return (config.commands || []).some((c) => c.action === 'end' && lower.includes(c.phrase.toLowerCase()));
}

function finish(message) {
  transcript.close(true);
  setConversationControls(false);
  $('start').disabled = true;
  setStatus(message);
}

// The SDK does not check who sent a message; we only trust the meeting origin.
window.addEventListener('message', (event) => {
  if (event.origin !== meetOrigin) return;
  const message = event.data;
  if (!message || message.issuer !== 'eself-conversation-events') return;
  switch (message.event) {
    case 'showing-agent':
      setStatus('In conversation.');
      setTimeout(() => { if (sdk && config.dpp) sdk.injectPrompt(JSON.stringify(config.dpp)); }, DPP_DELAY_MS);
      break;
    case 'agent-talked': {
      const text = textOf(message.data, 'agentContent');
      recordLine('Avatar', text);
      if (endsWithCommand(text)) setTimeout(() => { if (sdk) sdk.end(); finish('The conversation has ended. Thank you!'); }, 1200);
      break;
    }
    case 'user-transcription':
      recordLine('User', textOf(message.data, 'userTranscription'));
      break;
    case 'pronunciation-score':
      recordScore(message.data);
      break;
    case 'permissions-denied':
      setStatus('Microphone unavailable: use the text box inside the avatar window.');
      break;
    case 'conversation-ended':
      finish('The conversation has ended. Thank you!');
      break;
    case 'load-agent-error':
      showError('The avatar could not be loaded. Please try again later.');
      break;
    default:
      break;
  }
});

$('start').addEventListener('click', async () => {
  clearError();
  if (typeof window.KalturaAvatarSDK !== 'function') { showError(sdkMissingMessage()); return; }
  $('start').disabled = true;
  sdk = sdk || new window.KalturaAvatarSDK({ clientId: config.sdk.clientId, flowId: config.sdk.flowId,
    container: '#avatar-container', config: config.sdk.config });
  sdk.on('error', () => showError('We cannot reach the avatar service. Check your connection and try again.'));
  setStatus('Connecting to the avatar…');
  try {
    await sdk.start();
    setConversationControls(true);
  } catch (error) {
    $('start').disabled = false;
    showError('We cannot reach the avatar service. Check your connection and try again.');
  }
});

$('end').addEventListener('click', () => {
  if (sdk) sdk.end();
  finish('You ended the conversation.');
});

if (typeof window.KalturaAvatarSDK !== 'function') {
  showError(sdkMissingMessage());
  $('start').disabled = true;
}
window.avatarPage = { get sdk() { return sdk; } };
