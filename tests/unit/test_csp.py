"""The CSP builder: strict by construction, and only what each page needs."""

from __future__ import annotations

from server.security.csp import PagePolicy, baseline_headers, build_csp, permissions_policy

SDK_URL = "https://cdn.jsdelivr.net/gh/kaltura/conversational-avatar-embed-sdk@v2.7.4/sdk-socket/dist/kaltura-avatar-sdk.js"


def directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def test_default_policy_allows_only_our_origin_and_the_nonce() -> None:
    parsed = directives(build_csp("abc", PagePolicy()))
    assert parsed["default-src"] == ["'none'"]
    assert parsed["script-src"] == ["'self'", "'nonce-abc'"]
    assert parsed["connect-src"] == ["'self'"]
    assert parsed["frame-src"] == ["'none'"]
    assert parsed["frame-ancestors"] == ["'self'"]
    assert parsed["form-action"] == ["'self'"]


def test_never_unsafe_keywords_whatever_the_page_asks() -> None:
    policy = PagePolicy(
        script_urls=(SDK_URL,), connect_origins=("https://a.example",), frame_origins=("https://b",)
    )
    text = build_csp("n", policy)
    for banned in ("unsafe-inline", "unsafe-eval", "strict-dynamic", "*"):
        assert banned not in text.replace(SDK_URL, "")


def test_cdn_script_is_allowed_as_one_exact_url() -> None:
    parsed = directives(build_csp("n", PagePolicy(script_urls=(SDK_URL,))))
    assert parsed["script-src"] == ["'self'", "'nonce-n'", SDK_URL]


def test_embedding_origins_replace_self_in_frame_ancestors() -> None:
    parsed = directives(build_csp("n", PagePolicy(frame_ancestors=("https://shop.example",))))
    assert parsed["frame-ancestors"] == ["https://shop.example"]


def test_sources_are_not_repeated() -> None:
    parsed = directives(build_csp("n", PagePolicy(connect_origins=("https://x", "https://x"))))
    assert parsed["connect-src"] == ["'self'", "https://x"]


def test_permissions_policy_delegates_media_only_to_named_frames() -> None:
    assert "microphone=(self)" in permissions_policy()
    delegated = permissions_policy(["https://meet.example"])
    assert 'microphone=(self "https://meet.example")' in delegated
    assert 'camera=(self "https://meet.example")' in delegated
    assert "geolocation=()" in delegated


def test_hsts_only_over_https() -> None:
    assert "Strict-Transport-Security" not in baseline_headers(https=False)
    assert baseline_headers(https=True)["Strict-Transport-Security"].startswith("max-age=")


INJECTED = "https://m.avatar.us.kaltura.ai;script-src-elem * 'unsafe-inline';x@m.avatar.us.kaltura.ai"


def test_a_source_that_is_not_a_clean_origin_never_reaches_the_headers() -> None:
    policy = PagePolicy(frame_origins=(INJECTED, "https://ok.example"), permission_delegates=(INJECTED,))
    csp = build_csp("n", policy)
    assert "script-src-elem" not in csp and "unsafe-inline" not in csp
    assert directives(csp)["frame-src"] == ["https://ok.example"]
    assert "script-src-elem" not in permissions_policy([INJECTED, 'https://a.example" *'])
    assert "microphone=(self)" in permissions_policy([INJECTED, 'https://a.example" *'])
