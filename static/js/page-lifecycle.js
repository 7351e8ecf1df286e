// What both hosted pages do around their SDK: the transcript sender, the missing-SDK guard, Start and End,
// and how a call ends (final transcript flush, controls off, a closing status line).
import { clearError, sdkMissingMessage, setConversationControls, setStatus, showError } from './conversation-ui.js';
import { reportDiagnostic } from './diagnostics.js';
import { TranscriptSender } from './transcript-sender.js';

export const ENDED_MESSAGE = 'The conversation has ended. Thank you!';
const END_DELAY_MS = 1200; // lets the avatar's closing sentence finish playing before the call is closed

// createSdk() builds the page's SDK once, on the first Start; connect(sdk) starts the call and shows its own errors.
export function runPage({ config, createSdk, connect }) {
  const byId = (id) => document.getElementById(id);
  const sdkLoaded = () => typeof window.KalturaAvatarSDK === 'function';
  const transcript = new TranscriptSender(config.session.token);
  transcript.watchPageLifecycle();
  let sdk = null;

  function finish(message) {
    transcript.close(true);
    setConversationControls(false);
    byId('start').disabled = true;
    setStatus(message);
  }

  function endSoon() {
    reportDiagnostic(config.session.token, 'end', 'end_phrase');
    setTimeout(() => {
      if (sdk) sdk.end();
      finish(ENDED_MESSAGE);
    }, END_DELAY_MS);
  }

  byId('start').addEventListener('click', async () => {
    clearError();
    if (!sdkLoaded()) {
      showError(sdkMissingMessage());
      return;
    }
    byId('start').disabled = true;
    sdk = sdk || createSdk();
    await connect(sdk);
  });

  byId('end').addEventListener('click', () => {
    reportDiagnostic(config.session.token, 'end', 'visitor_ended');
    if (sdk) sdk.end();
    finish('You ended the conversation.');
  });

  if (!sdkLoaded()) {
    showError(sdkMissingMessage());
    byId('start').disabled = true;
  }
  window.avatarPage = { get sdk() { return sdk; } };
  return { transcript, finish, endSoon, get sdk() { return sdk; } };
}
