"""The signaling relay: Socket.IO, WHEP and the Iframe SDK assets request, all through our own origin."""
