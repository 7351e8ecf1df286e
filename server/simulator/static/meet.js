// The simulator's meeting page: WHEP video, a text box, and the Iframe SDK's postMessage protocol.
(() => {
  const ISSUER = 'eself-conversation-events';
  const parts = window.location.pathname.split('/');
  const client = decodeURIComponent(parts[2] || '');
  const flow = decodeURIComponent(parts[3] || '');
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${window.location.host}/meet-ws?client=${encodeURIComponent(client)}&flow=${encodeURIComponent(flow)}`);
  const $ = (id) => document.getElementById(id);

  const toParent = (event, data) => window.parent.postMessage({ issuer: ISSUER, event, data }, '*');
  const send = (event, data) => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ event, data }));

  async function startVideo(sessionId) {
    const peer = new RTCPeerConnection({ iceServers: [] });
    peer.addTransceiver('audio', { direction: 'recvonly' });
    peer.addTransceiver('video', { direction: 'recvonly' });
    peer.ontrack = (event) => { $('avatar').srcObject = event.streams[0] || new MediaStream([event.track]); };
    await peer.setLocalDescription(await peer.createOffer());
    await new Promise((resolve) => {
      if (peer.iceGatheringState === 'complete') return resolve();
      peer.onicegatheringstatechange = () => peer.iceGatheringState === 'complete' && resolve();
      setTimeout(resolve, 1000);
    });
    const answer = await fetch(`/rtc/v1/whep/?app=app&stream=${sessionId}`, {
      method: 'POST', headers: { 'content-type': 'application/sdp' }, body: peer.localDescription.sdp,
    });
    if (!answer.ok) { toParent('load-agent-error', { status: answer.status }); return; }
    await peer.setRemoteDescription({ type: 'answer', sdp: await answer.text() });
  }

  socket.addEventListener('message', async (message) => {
    const { event, data } = JSON.parse(message.data);
    if (event === 'session') { toParent('showing-join-meeting', {}); $('join').dataset.session = data.id; }
    else if (event === 'showing-agent') toParent('showing-agent', {});
    else if (event === 'stvSpeechChunk' && data.text) $('caption').textContent = data.text;
    else if (event === 'stvFinishedTalking') toParent('agent-talked', { agentContent: data.agentContent });
    else if (event === 'agentTurnToTalk') toParent('user-transcription', { userTranscription: data.userTranscription });
    else if (event === 'pronunciation-score') toParent('pronunciation-score', data);
    else if (event === 'to-parent') toParent(data.event, data.data);
    else if (event === 'conversationEnded' || event === 'conversationTimeExpired') {
      toParent('conversation-ended', {});
      $('say').hidden = true;
    }
  });
  socket.addEventListener('close', () => { $('join').disabled = true; });

  $('join').addEventListener('click', async () => {
    toParent('join-meeting-clicked', {});
    $('join').hidden = true;
    $('say').hidden = false;
    await startVideo($('join').dataset.session);
    send('join', {});
  });

  $('say').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (text) send('text', { text });
    $('text').value = '';
  });

  // Prompts injected by the host page (the Iframe SDK's injectPrompt).
  window.addEventListener('message', (event) => {
    const message = event.data;
    if (message && message.type === 'eself-dynamic-prompt-message' && typeof message.content === 'string') {
      send('prompt', { content: message.content });
    }
  });
})();
