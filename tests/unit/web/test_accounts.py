"""Accounts: hashed secrets, keys, roles, the legacy key, login rate limit, signed sessions."""

from __future__ import annotations

import pytest

from facegate.components.core.errors import AccountError, LoginRateLimited, UnknownAccount
from facegate.components.service.access_log import engine_for
from facegate.components.web.accounts import Accounts, LoginLimiter, Principal, Sessions, hash_secret, secret_matches


@pytest.fixture
def accounts(tmp_path):
    return Accounts(engine_for(f"sqlite:///{tmp_path / 'access.db'}"), legacy_key="old-key")


def test_secret_is_hashed_and_checked(accounts, tmp_path):
    secret = accounts.add("ops", "operator")
    assert secret not in (tmp_path / "access.db").read_bytes().decode("latin-1")  # only the hash at rest
    assert accounts.login("ops", secret) == Principal("ops", "operator")
    assert accounts.login("ops", secret + "x") is None and accounts.login("nobody", secret) is None
    assert accounts.from_key(f"ops.{secret}".encode()) == Principal("ops", "operator")
    assert accounts.from_key(f"ops.{secret}".encode()) == Principal("ops", "operator")  # cached
    assert accounts.from_key(b"old-key") == Principal("api-key", "operator")
    assert accounts.from_key(b"\xff\xfe") is None and accounts.from_key(b"ops.") is None
    accounts.remove("ops")  # a removed account's key stops at once, cache or not
    assert accounts.from_key(f"ops.{secret}".encode()) is None
    with pytest.raises(UnknownAccount):
        accounts.remove("ops")


def test_bad_accounts_are_refused_by_field(accounts):
    accounts.add("gate-1", "turnstile")
    with pytest.raises(AccountError, match="exists"):
        accounts.add("gate-1", "viewer")
    with pytest.raises(AccountError, match="role"):
        accounts.add("x", "admin")
    with pytest.raises(AccountError, match="name"):
        accounts.add("../x", "viewer")
    assert [a["role"] for a in accounts.list()] == ["turnstile"]
    assert Principal("v", "viewer").can("read") and not Principal("v", "viewer").can("enrol")
    assert Principal("t", "turnstile").can("decide") and not Principal("t", "turnstile").can("read")


def test_hash_format_and_constant_time_check():
    stored = hash_secret("s3cret", n=2**10)
    assert stored.startswith("scrypt$1024$") and secret_matches("s3cret", stored)
    assert not secret_matches("s3cret", "md5$abc") and not secret_matches("s3cret", "garbage")


def test_login_limiter():
    lim = LoginLimiter(max_failures=3, window_s=60)
    for _ in range(3):
        lim.check("name:ops", "ip:1.2.3.4")
        lim.failed("name:ops", "ip:1.2.3.4")
    with pytest.raises(LoginRateLimited) as exc:
        lim.check("name:other", "ip:1.2.3.4")  # the address is limited, whatever the name
    assert exc.value.http_status == 429 and exc.value.retry_after_s > 0


def test_sessions_are_signed_and_expire():
    s = Sessions(b"k" * 32, max_age_s=3600)
    cookie = s.issue(Principal("ops", "operator"))
    assert s.name_of(cookie) == "ops"
    assert s.name_of(cookie[:-2] + "xx") is None
    assert Sessions(b"other" * 8, 3600).name_of(cookie) is None
    assert Sessions(b"k" * 32, max_age_s=-1).name_of(cookie) is None
