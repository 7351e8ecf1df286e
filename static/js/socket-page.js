// Hosted page for the Socket SDK: Socket.IO + WebRTC, text fallback, spoken commands.
// The DPP never reaches this page: the relay injects it upstream (docs/protocol.md).
import {
  addTranscriptEntry, bindEndCommands, clearError, errorMessage, readConfig,
  setConversationControls, setStatus, showError,
} from './conversation-ui.js';
import { reportSdkError } from './diagnostics.js';
import { ENDED_MESSAGE, runPage } from './page-lifecycle.js';

const config = readConfig();
const $ = (id) => document.getElementById(id);
const page = runPage({ config, createSdk, connect });

function createSdk() {
  // Socket.IO and WHEP go to our own origin (the relay), so the CSP can say connect-src 'self'.
  const endpoints = { ...config.sdk.endpoints, socket: window.location.origin };
  const avatar = new window.KalturaAvatarSDK({ ...config.sdk, endpoints, container: '#avatar-container' });
  for (const [name, url] of Object.entries(config.libraries || {})) avatar.setLibraryUrl(name, url);

  avatar.on('state-change', ({ to }) => {
    if (to === 'connecting') setStatus('Connecting to the avatar…');
    if (to === 'joined') setStatus('The avatar is getting ready…');
  });
  avatar.on('ready', () => {
    setStatus('In conversation. Speak, or type below.');
    setConversationControls(true);
  });
  avatar.on('transcript-entry', (entry) => {
    const when = new Date(entry.timestamp);
    addTranscriptEntry(entry.role, entry.text, when);
    page.transcript.add(entry.role, entry.text, when);
  });
  avatar.on('mic-denied', () => setStatus('Microphone unavailable: type your messages below.'));
  avatar.on('time-warning', ({ remainingSeconds }) => setStatus(`About ${Math.round(remainingSeconds)} seconds left.`));
  avatar.on('reconnecting', ({ attempt, maxAttempts }) => setStatus(`Reconnecting (${attempt} of ${maxAttempts})…`));
  avatar.on('reconnected', () => { clearError(); setStatus('Reconnected.'); });
  avatar.on('queue-started', () => setStatus('All avatars are busy; you are in the queue…'));
  avatar.on('conversation-ended', () => page.finish(ENDED_MESSAGE));
  avatar.on('error', (error) => {
    reportSdkError(config.session.token, error);
    showError(errorMessage(error));
    if (error && error.recoverable === false) setConversationControls(false);
  });
  bindEndCommands(config.commands, (phrase) => avatar.onEndPhrase(phrase, () => page.endSoon()));
  return avatar;
}

async function connect(avatar) {
  $('end').disabled = false;
  try {
    await avatar.connect();
  } catch (error) {
    showError(errorMessage(error));
  }
}

$('mute').addEventListener('click', () => {
  const sdk = page.sdk;
  if (!sdk) return;
  const muted = !sdk.isMicMuted();
  if (muted) sdk.muteMic(); else sdk.unmuteMic();
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute microphone' : 'Mute microphone';
});

$('text-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('text-input').value.trim();
  if (!text || !page.sdk) return;
  try {
    page.sdk.sendText(text);
    $('text-input').value = '';
  } catch (error) {
    showError(errorMessage(error));
  }
});
