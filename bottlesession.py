"""bottlesession: sessions and logins for the Bottle web framework, in one file.

Copy this file next to bottle.py, or ``pip install bottlesession``. It needs
nothing but the standard library and bottle::

    import os, bottle, bottlesession

    app = bottle.Bottle()
    manager = bottlesession.CookieSession(secret=os.environ['SESSION_SECRET'])
    app.install(bottlesession.SessionPlugin(manager))
    valid_user = bottlesession.authenticator(manager)

    @app.route('/')
    @valid_user()
    def index(session):                  # the plugin passes the session in
        session['visits'] = session.get('visits', 0) + 1   # and saves it
        return 'Hello %s, visit %d' % (session['name'], session['visits'])

Stores: CookieSession (data in a signed cookie), PickleSession (a file per
session), SQLSession (any DB-API 2 connection, sqlite3 by default) and
RedisSession (a redis-py compatible client). They share one Session object,
one set of expiry rules and one request cycle.

The CookieSession wire format, after Django's signing.py::

    value     = payload "." timestamp "." signature
    payload   = base64url(json)              or "." base64url(zlib(json))
    json      = {"c": created, "d": {...session data...}}
    timestamp = decimal seconds since the epoch when the cookie was signed
    signature = base64url(HMAC-SHA256(key, cookie_name "\\0" payload "." timestamp))
    key       = HMAC-SHA256(secret, "bottlesession.cookie-session")

base64url is RFC 4648 without padding, so the value needs no quoting. For
example, with secret "0123456789abcdef", cookie_name "session_data", created
and signed at 1700000000::

    session_data=eyJjIjoxNzAwMDAwMDAwLCJkIjp7InNlc3Npb25pZCI6IkFBQUFBQUFBQUFBQUFB
    QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUEiLCJ2YWxpZCI6ZmFsc2V9fQ.1700000000.
    QhXdfmP1236PDdAAWHHizXd3wE7_6BvdoqnsMIBHQ_Y          (one line)

Caveats. A signed cookie is not encrypted: the client can read it. It cannot
be revoked: a copy can be replayed until it expires, so keep cookie_expires
short or use a server-side store where logout must end the session
everywhere. Browsers drop cookies over about 4 KB; CookieSession raises
SessionTooLarge rather than let that log the user out in silence.
"""

__author__ = 'The bottlesession authors'
__version__ = '1.0.0'
__license__ = 'MIT'

# Copyright (c) 2026 The bottlesession authors. The API it keeps working was
# designed by Sean Reifschneider for the original bottlesession (2011).
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to
# deal in the Software without restriction, including without limitation the
# rights to use, copy, modify, merge, publish, distribute, sublicense, and/or
# sell copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions: the above
# copyright notice and this permission notice shall be included in all copies
# or substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS",
# WITHOUT WARRANTY OF ANY KIND. See the LICENSE file for the full text.

__all__ = [
    'SessionError', 'BadSession', 'BadSignature',
    'SessionTooLarge', 'SessionStoreError', 'ConfigError',
    'InsecureSecretWarning', 'derive_key', 'machine_secret', 'Signer',
    'Session', 'BaseSession', 'CookieSession', 'ServerSession',
    'PickleSession', 'SQLSession', 'RedisSession', 'SessionPlugin', 'Plugin',
    'authenticator', 'redirect_back',
]

import binascii
import datetime
import functools
import hashlib
import hmac
import inspect
import json
import logging
import math
import os
import pickle
import random
import re
import secrets
import stat
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
import zlib

import bottle

_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
DEFAULT_MAX_AGE = 30 * 24 * 3600     # the original's cookie_expires: 30 days
COOKIE_LIMIT = 4093                  # bytes of name=value browsers keep for sure
REDIRECT_COOKIE = 'validuserloginredirect'
_log = logging.getLogger('bottlesession')

_ID_RE = re.compile(r'[A-Za-z0-9_-]{43}\Z')             # secrets.token_urlsafe(32)
_LEGACY_ID_RE = re.compile(                             # the original's uuid4 ids
    r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z')
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 6265 cookie name
_ATTR_RE = re.compile(r'[\x21-\x3a\x3c-\x7e]+\Z')         # printable, no ';'
_SAFE_PATH_RE = re.compile(r'/(?![/\\])[\x21-\x5b\x5d-\x7e]*\Z')  # no '\\'


###############################################################################
# Helpers #####################################################################
###############################################################################

def _new_id():
    """A fresh session id: 256 random bits, URL- and cookie-safe."""
    return secrets.token_urlsafe(32)


def _seconds(value, name):
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError('%s must be a number of seconds or a timedelta, not %r'
                        % (name, value))
    if not value > 0:
        raise ConfigError('%s must be positive, not %r' % (name, value))
    return value


# base64url without padding, on binascii directly: base64's wrappers cost
# more than the coding itself on a cookie-sized value.
_TO_URLSAFE = bytes.maketrans(b'+/', b'-_')
_FROM_URLSAFE = bytes.maketrans(b'-_', b'+/')


def _b64encode(raw):
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b'=')


def _b64decode(data):
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b'==')


_json_encode = json.JSONEncoder(separators=(',', ':'), allow_nan=False).encode
_json_decode = json.JSONDecoder().decode


def _to_json(data):
    """Serialize session data, or raise a TypeError that names the bad key."""
    try:
        return _json_encode(data)
    except (TypeError, ValueError) as exc:
        for key, value in data.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError('session key %r is not a string' % (key,)) from exc
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise TypeError('session[%r] holds a %s, which JSON cannot store'
                                % (key, type(value).__name__)) from exc
        raise TypeError('session data cannot be stored as JSON: %s' % exc) from exc


def _cookie_value(environ, name):
    """The first value of cookie `name` in the request, or None.

    Reads the header directly: SimpleCookie would parse every cookie in it,
    and that costs more than the rest of a session lookup together."""
    header = environ.get('HTTP_COOKIE')
    if not header or name not in header:
        return None
    for part in header.split(';'):
        key, eq, value = part.partition('=')
        if eq and key.strip() == name:
            return value.strip()
    return None


# These two write to bottle's header dict (name -> list of values, the same in
# 0.12 and 0.13) directly: its public accessors cost more than the rest of a
# session read. Our values are checked for CR, LF and NUL in __init__.

def _put_cookie(response, name, header):
    """Add a Set-Cookie header, replacing one this response already has for name."""
    cookies = response._headers.setdefault('Set-Cookie', [])
    if cookies:
        prefix = name + '='
        cookies[:] = [c for c in cookies if not c.startswith(prefix)]
    cookies.append(header)


def _mark_private(response):
    """A response that depends on the session must not be shared by caches."""
    headers = response._headers
    headers.setdefault('Cache-Control', ['private'])
    vary = headers.setdefault('Vary', ['Cookie'])
    if 'cookie' not in vary[-1].lower():
        vary[-1] += ', Cookie'


def _private_dir(path):
    """Create `path` mode 0700 if missing; refuse it if others could write it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError('cannot create session directory %r: %s' % (path, exc)) from exc
    _check_private(path)
    return path


_PLANTED_PICKLE = 'can plant session files, and unpickling them runs their code'
_PLANTED_SQLITE = 'can plant a session database, and with it a signed-in session'


def _check_private(path, what='session directory', planted=_PLANTED_PICKLE):
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError('cannot use %s %r: %s' % (what, path, exc)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError('%s %r is not a directory' % (what, path))
    _check_owner(path, st, what, planted)


def _check_owner(path, st, what, planted):
    """Refuse a directory or file that another user owns or others can write."""
    if hasattr(os, 'geteuid') and st.st_uid != os.geteuid():
        raise ConfigError('%s %r is owned by uid %d, not by this user (uid %d): whoever '
                          'owns it %s' % (what, path, st.st_uid, os.geteuid(), planted))
    if st.st_mode & 0o022:
        private = 'a private directory (mode 0700)' if stat.S_ISDIR(st.st_mode) else 'mode 0600'
        raise ConfigError('%s %r is writable by others (mode %o): anyone who can write it '
                          '%s. Use %s.' % (what, path, stat.S_IMODE(st.st_mode), planted, private))


def _default_dir():
    uid = os.geteuid() if hasattr(os, 'geteuid') else 0
    return os.path.join(tempfile.gettempdir(), 'bottlesession-%d' % uid)


###############################################################################
# Errors ######################################################################
###############################################################################

class SessionError(Exception):
    """The base of every error this module raises."""


class BadSession(SessionError):
    """The client sent a session cookie or id that cannot be trusted.

    Never reaches the application: get_session() answers it with a fresh
    session."""


class BadSignature(BadSession):
    """The signature does not match the payload under any key."""


class SessionTooLarge(SessionError, ValueError):
    """The cookie would pass the size browsers keep; they would drop it silently."""

    def __init__(self, size, limit):
        super().__init__('the session cookie would be %d bytes; browsers drop cookies '
                         'over %d. Keep less in the session or use a server-side '
                         'store.' % (size, limit))
        self.size, self.limit = size, limit


class SessionStoreError(SessionError, bottle.HTTPError):
    """The store failed or cannot be reached. Raised from the driver's error.

    It is a bottle.HTTPError too, so a request that meets it gets a clear
    503 Service Unavailable, never a silent logout."""

    def __init__(self, message):
        bottle.HTTPError.__init__(self, 503, message)
        self.args = (message,)

    def __str__(self):
        return self.args[0]


class ConfigError(SessionError, ValueError):
    """The session manager was configured wrongly. Raised at construction."""


class InsecureSecretWarning(UserWarning):
    """The signing secret is weak: short, or derived from the machine."""


###############################################################################
# Secrets and signing #########################################################
###############################################################################

def derive_key(secret, salt):
    """Derive a key for one purpose: HMAC-SHA256(secret, 'bottlesession.' + salt).

    It keeps keys for different purposes apart, so a signature made for one
    can never be used for another. It does not strengthen a weak secret."""
    return hmac.new(secret, b'bottlesession.' + salt, hashlib.sha256).digest()


_PROC_STAT, _PROC_UPTIME = '/proc/stat', '/proc/uptime'      # Linux only


def _boot_time():
    try:
        with open(_PROC_STAT, 'rb') as stats:
            for line in stats:
                if line.startswith(b'btime '):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(_PROC_UPTIME, 'rb') as uptime:
            # Rounded to the minute, as now - uptime jitters by a fraction.
            return int(time.time() - float(uptime.read().split()[0])) // 60 * 60
    except (OSError, ValueError, IndexError):
        raise ConfigError('no secret was given and this system has no boot time to '
                          'derive one from: pass secret= or secret_file=') from None


def machine_secret(_stacklevel=2):
    """A secret derived from this machine's node id and boot time, with a warning.

    It stays the same across restarts of the app within one boot, so sessions
    survive a restart. It is weak: any local user can compute it, it changes
    at reboot, and it differs per machine, so servers cannot share sessions."""
    node = uuid.getnode()
    if node >> 40 & 1:      # multicast bit: uuid made the node id up at random
        raise ConfigError('no secret was given and this machine has no stable node '
                          'id to derive one from: pass secret= or secret_file=')
    warnings.warn(InsecureSecretWarning(
        'no secret given: derived one from the node id and boot time. Any local '
        'user can compute it, it changes at every reboot (logging everyone out), '
        'and it differs per machine, so several servers cannot share sessions. '
        'Pass secret= or secret_file=.'), stacklevel=_stacklevel)
    seed = 'bottlesession:%d:%d' % (node, _boot_time())
    return hashlib.sha256(seed.encode('ascii')).hexdigest().encode('ascii')


def _load_secrets(secret, secret_file):
    """The list of secrets as bytes, newest first, from the constructor's arguments."""
    if isinstance(secret, (list, tuple)):
        found = list(secret)
        if not found:
            raise ConfigError('secret is an empty list: give at least one secret')
    elif secret:
        found = [secret]
    elif secret_file is not None:
        try:
            with open(secret_file, 'rb') as source:
                found = [source.readline().strip()]
        except OSError as exc:
            raise ConfigError('cannot read secret_file %r: %s' % (secret_file, exc)) from exc
        if not found[0]:
            raise ConfigError('secret_file %r is empty: its first line is the secret'
                              % (secret_file,))
    else:
        found = [machine_secret(_stacklevel=4)]     # point at the caller's line
    keys = []
    for item in found:
        if not isinstance(item, (str, bytes)) or not item:
            raise TypeError('each secret must be a non-empty str or bytes, not %r' % (item,))
        keys.append(item.encode('utf-8') if isinstance(item, str) else item)
    if any(len(key) < 16 for key in keys):
        warnings.warn(InsecureSecretWarning(
            'a session secret is shorter than 16 bytes: it can be guessed. Use '
            'secrets.token_urlsafe(32).'), stacklevel=3)
    return keys


class Signer:
    """Sign and verify bytes with HMAC-SHA256, under one or more secrets.

    The first secret signs; every one verifies, so secrets can be rotated:
    put the new one first and drop the old one once its cookies expired.
    `context` is bound into every signature (CookieSession binds the cookie
    name, so one cookie's value is worthless under another name)."""

    def __init__(self, secrets, salt, context=b''):
        if not secrets:
            raise ConfigError('Signer needs at least one secret')
        # One keyed HMAC per secret, context already fed in; copying one is
        # cheaper than keying a new one for every cookie.
        self._macs = [hmac.new(derive_key(s, salt), context + b'\0', 'sha256')
                      for s in secrets]

    def signature(self, message, index=0):
        mac = self._macs[index].copy()
        mac.update(message)
        return _b64encode(mac.digest())

    def sign(self, message):
        return message + b'.' + self.signature(message)

    def unsign(self, signed):
        """Return (message, index of the secret that verified) or raise BadSignature."""
        message, dot, sig = signed.rpartition(b'.')
        if not dot:
            raise BadSignature('no signature')
        for index in range(len(self._macs)):
            if hmac.compare_digest(sig, self.signature(message, index)):
                return message, index
        raise BadSignature('signature does not match')


###############################################################################
# The session object ##########################################################
###############################################################################

class Session(dict):
    """The session: a dict that knows its id and whether it is new or modified.

    Changes through the dict methods set `modified`. A change inside a value
    (``session['cart'].append(x)``) does not: set ``session.modified = True``.
    Keys 'sessionid' and 'valid' are there from the start, as in the original.
    """

    __slots__ = ('manager', 'id', 'created', 'accessed', 'new', 'modified', 'replaces',
                 'login_state')

    def __init__(self, manager, sid, data=(), created=None, accessed=None, new=True):
        dict.__init__(self, data)
        self.manager = manager
        self.created = created
        self.accessed = accessed
        self.new = new
        self._attach(sid)

    def _attach(self, sid):
        self.id = sid
        dict.__setitem__(self, 'sessionid', sid)
        dict.setdefault(self, 'valid', False)
        self.login_state = self._login()    # a change of it at save rotates the id
        self.modified = False
        self.replaces = None        # an id to delete when this session is saved

    def _login(self):
        return bool(self.get('valid')), self.get('name')

    def save(self):
        """Save now. The plugin does this for you when the session was modified."""
        self.manager.save(self)

    def regenerate(self):
        """Give the session a new id, keep its data, delete the old id. Call at login."""
        self.manager.regenerate(self)

    def invalidate(self):
        """Delete the session and expire its cookie. Call at logout."""
        self.manager.invalidate(self)

    def __setitem__(self, key, value):
        self.modified = True
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        self.modified = True
        dict.__delitem__(self, key)

    def __ior__(self, other):
        self.modified = True
        return dict.__ior__(self, other)

    def clear(self):
        self.modified = True
        dict.clear(self)

    def pop(self, *args):
        self.modified = True
        return dict.pop(self, *args)

    def popitem(self):
        self.modified = True
        return dict.popitem(self)

    def setdefault(self, key, default=None):
        self.modified = True
        return dict.setdefault(self, key, default)

    def update(self, *args, **kwargs):
        self.modified = True
        dict.update(self, *args, **kwargs)

    def __repr__(self):
        return '<Session %s… %s>' % (self.id[:6], dict.__repr__(self))


###############################################################################
# Session managers ############################################################
###############################################################################

class BaseSession:
    """What every store shares: ids, expiry, cookies and the request cycle.

    :param cookie_expires: the session's maximum age in seconds (or a
        timedelta), counted from its creation or its last login, enforced by
        the server and sent to the browser as Max-Age. None makes a
        browser-session cookie; the server still ends it after 30 days.
    :param idle_timeout: end a session not used for this long (off by default).
    :param cookie_name, path, domain, secure, httponly, samesite: the cookie.

    A store subclass says only how to turn a cookie value into a Session
    (`decode`), a Session into a cookie value (`encode`), and how to `delete`.
    """

    def __init__(self, cookie_expires=DEFAULT_MAX_AGE, *, idle_timeout=None,
                 cookie_name='sessionid', path='/', domain=None, secure=False,
                 httponly=True, samesite='Lax'):
        self.cookie_expires = cookie_expires
        self.max_age = _seconds(DEFAULT_MAX_AGE if cookie_expires is None
                                else cookie_expires, 'cookie_expires')
        self.idle_timeout = None if idle_timeout is None else _seconds(idle_timeout, 'idle_timeout')
        if not isinstance(cookie_name, str) or not _TOKEN_RE.match(cookie_name):
            raise ConfigError('cookie_name %r is not a valid cookie name' % (cookie_name,))
        if not isinstance(path, str) or not path.startswith('/') or not _ATTR_RE.match(path):
            raise ConfigError('path must be a URL path like "/", not %r' % (path,))
        if domain is not None and not (isinstance(domain, str) and _ATTR_RE.match(domain)):
            raise ConfigError('domain %r is not a valid cookie domain' % (domain,))
        samesite = samesite and str(samesite).capitalize()
        if samesite not in ('Lax', 'Strict', 'None', None):
            raise ConfigError('samesite must be "Lax", "Strict", "None" or None')
        if samesite == 'None' and not secure:
            raise ConfigError('samesite="None" needs secure=True; browsers refuse it otherwise')
        self.cookie_name, self.path, self.domain = cookie_name, path, domain
        self.secure, self.httponly, self.samesite = bool(secure), bool(httponly), samesite
        self._attrs = ''.join(['; Path=' + path,
                               '; Domain=' + domain if domain else '',
                               '; Secure' if secure else '',
                               '; HttpOnly' if httponly else '',
                               '; SameSite=' + samesite if samesite else ''])
        self._environ_key = 'bottlesession.' + cookie_name
        # Refresh the idle clock at most this often, so reads rarely write.
        self._touch_after = self.idle_timeout and self.idle_timeout / 10

    def now(self):
        """The time in seconds. Every expiry decision reads the clock here."""
        return time.time()

    # The store's part ########################################################

    def decode(self, value):
        """Return the Session for a cookie value, or raise BadSession."""
        raise NotImplementedError

    def encode(self, session):
        """Store the session; return the new cookie value, or None to keep it."""
        raise NotImplementedError

    def delete(self, sid):
        """Delete the stored session `sid`, if there is one."""
        raise NotImplementedError

    def cleanup(self):
        """Delete expired sessions, for cron. Return how many were removed."""
        return 0

    # The request cycle #######################################################

    def get_session(self):
        """The current request's session, loaded once per request.

        A missing, malformed, tampered, unknown or expired cookie gives a
        fresh session; nothing is stored or sent until it is saved."""
        environ = bottle.request.environ
        session = environ.get(self._environ_key)
        if session is None:
            session = environ[self._environ_key] = self._load(environ)
            _mark_private(bottle.response)
        return session

    def _load(self, environ):
        now = self.now()
        value = _cookie_value(environ, self.cookie_name)
        if value:
            try:
                session = self.decode(value)
            except BadSession:
                pass
            else:
                if now - session.created > self.max_age or (
                        self.idle_timeout is not None
                        and now - session.accessed > self.idle_timeout):
                    self.delete(session.id)         # expired: gone on the server too
                else:
                    if self._touch_after and now - session.accessed > self._touch_after:
                        self._refresh(session)
                    return session
        return Session(self, _new_id(), created=now, accessed=now)

    def _refresh(self, session):
        """Move the idle clock of a session the request only reads. A store
        that refuses the write (full, read-only) is logged, and the page served:
        the session is still good, and the next request tries again."""
        try:
            self._save(session, bottle.response)
        except SessionStoreError as exc:
            _log.warning('could not refresh the idle timeout of a session: %s', exc)

    def expires_at(self, created, accessed):
        """When a session ends unless it is used again, in epoch seconds."""
        end = created + self.max_age
        if self.idle_timeout is not None:
            end = min(end, accessed + self.idle_timeout)
        return end

    def save(self, session):
        """Store the session and send its cookie. Rotates the id at login."""
        self._save(session, bottle.response)

    def _save(self, session, response):
        if not isinstance(session, Session) or session.manager is not self:
            raise TypeError('save() takes the session that get_session() returned')
        now = self.now()
        login = session._login()
        if not session.new and session.login_state != login:
            self._rotate(session, now)      # fixation: login gets a fresh id
        elif len(session.id) != 43:
            self._rotate(session, now)      # upgrade a uuid4 id the original made
        session.accessed = now
        value = self.encode(session)
        if value is not None:
            if self.cookie_expires is None:     # a browser-session cookie
                header = '%s=%s%s' % (self.cookie_name, value, self._attrs)
            else:
                header = '%s=%s; Max-Age=%d%s' % (self.cookie_name, value, max(
                    0, math.ceil(session.created + self.max_age - now)), self._attrs)
            _put_cookie(response, self.cookie_name, header)
        session.new = session.modified = False
        session.replaces = None
        session.login_state = login
        if response is not bottle.response:     # get_session() marked that one
            _mark_private(response)

    def _rotate(self, session, now):
        replaces = session.replaces or (None if session.new else session.id)
        session._attach(_new_id())
        session.replaces = replaces
        session.created = now
        session.modified = True

    def regenerate(self, session):
        """Give the session a new id, keep its data and delete the old id; save it."""
        self._rotate(session, self.now())
        self._save(session, bottle.response)

    def invalidate(self, session):
        """Delete the session's stored data and expire its cookie.

        The same object becomes a fresh, empty, anonymous session."""
        for sid in (session.replaces, None if session.new else session.id):
            if sid:
                self.delete(sid)
        _put_cookie(bottle.response, self.cookie_name,
                    '%s=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT%s'
                    % (self.cookie_name, self._attrs))
        now = self.now()
        dict.clear(session)
        session._attach(_new_id())
        session.new, session.created, session.accessed = True, now, now
        _mark_private(bottle.response)


class CookieSession(BaseSession):
    """Keeps the session data in a signed cookie, so the server stores nothing.

    :param secret: str or bytes, or a list of them, newest first, to rotate
        keys: the first signs, every one verifies, and a cookie signed with an
        older one is re-signed with the first when it is next saved.
    :param secret_file: read the secret from the first line of this file.
    :param compress: zlib-compress payloads that shrink by it.

    With neither secret, one is derived from the machine, with a warning
    (see machine_secret). Data must be JSON: str keys; str, int, float, bool,
    None, lists and dicts. The client can read it and replay it until it
    expires (see the module docstring).
    """

    salt = b'cookie-session'
    max_cookie_size = 8192       # what we even look at; a valid one is <= 4093
    max_decompressed = 256 * 1024

    def __init__(self, secret=None, secret_file=None, cookie_name='session_data',
                 secure=False, httponly=True, cookie_expires=DEFAULT_MAX_AGE, *,
                 compress=False, **options):
        super().__init__(cookie_expires, cookie_name=cookie_name, secure=secure,
                         httponly=httponly, **options)
        self.signer = Signer(_load_secrets(secret, secret_file), self.salt,
                             cookie_name.encode('ascii'))
        self.compress = compress

    def decode(self, value):
        if len(value) > self.max_cookie_size or not value.isascii():
            raise BadSession('cookie is oversized or not ASCII')
        body, _ = self.signer.unsign(value.encode('ascii'))
        payload, dot, stamp = body.rpartition(b'.')
        if not dot or not stamp.isdigit():
            raise BadSession('no timestamp')
        try:
            if payload.startswith(b'.'):
                inflater = zlib.decompressobj()
                raw = inflater.decompress(_b64decode(payload[1:]), self.max_decompressed)
                if inflater.unconsumed_tail or not inflater.eof:
                    raise BadSession('compressed payload too large or truncated')
            else:
                raw = _b64decode(payload)
            record = _json_decode(raw.decode('utf-8'))
            created, data = float(record['c']), record['d']
            sid = data['sessionid']
        except BadSession:
            raise
        except (ValueError, TypeError, KeyError, zlib.error, binascii.Error) as exc:
            raise BadSession('malformed payload') from exc
        if not isinstance(sid, str) or not _ID_RE.match(sid):
            raise BadSession('malformed session id')
        return Session(self, sid, data, created, int(stamp), new=False)

    def encode(self, session):
        raw = ('{"c":%d,"d":%s}' % (session.created, _to_json(session))).encode('ascii')
        payload = _b64encode(raw)
        if self.compress:
            packed = b'.' + _b64encode(zlib.compress(raw, 9))
            if len(packed) < len(payload):
                payload = packed
        value = self.signer.sign(b'%s.%d' % (payload, session.accessed)).decode('ascii')
        size = len(self.cookie_name) + 1 + len(value)
        if size > COOKIE_LIMIT:
            raise SessionTooLarge(size, COOKIE_LIMIT)
        return value

    def delete(self, sid):
        pass    # nothing is stored on the server; invalidate() expires the cookie


class ServerSession(BaseSession):
    """Base for stores that keep the data on the server and an id in the cookie.

    Ids are strict: a malformed id, or one the store does not hold, is never
    adopted. A subclass implements read, write, delete and cleanup, and keeps
    session `sid` under storage_key(sid), never under the id itself.

    :param cleanup_chance: the chance that saving a new session first runs
        cleanup(), so expired sessions go away without cron. 0 turns it off.
    :param namespace: a name for this app, for apps that share a store and
        the cookie's name, path and domain.
    """

    legacy_ids = False

    def __init__(self, cookie_expires=DEFAULT_MAX_AGE, *, cleanup_chance=0.001,
                 namespace=None, **options):
        super().__init__(cookie_expires, **options)
        if not 0 <= cleanup_chance <= 1:
            raise ConfigError('cleanup_chance must be between 0 and 1')
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError('namespace must be a str, not %r' % (namespace,))
        self.cleanup_chance, self.namespace = cleanup_chance, namespace
        identity = _json_encode([self.cookie_name, self.path, self.domain, namespace])
        self._identity = hashlib.sha256(b'bottlesession.key\0%s\0' % identity.encode('utf-8'))

    def storage_key(self, sid):
        """The key the store keeps session `sid` under: a hash of the id and of
        the issuing app's cookie name, path, domain and namespace.

        So another app's ids are unknown here, even on the same table or Redis
        prefix, and a copy of the stored keys gives nobody a usable cookie.
        Files the original bottlesession wrote keep their uuid4 names."""
        if self.legacy_ids and len(sid) == 36:
            return sid
        digest = self._identity.copy()
        digest.update(sid.encode('utf-8', 'surrogatepass'))
        return digest.hexdigest()       # 64 characters: fits the SQL id column

    def read(self, sid):
        """Return (created, accessed, data) for `sid`, or None."""
        raise NotImplementedError

    def write(self, sid, created, accessed, data, replaces=None):
        """Store a session; when `replaces` is given, delete that id too."""
        raise NotImplementedError

    def valid_id(self, sid):
        return bool(_ID_RE.match(sid) or (self.legacy_ids and _LEGACY_ID_RE.match(sid)))

    def decode(self, value):
        if not self.valid_id(value):
            raise BadSession('malformed session id')
        record = self.read(value)
        if record is None:
            raise BadSession('unknown session id')
        created, accessed, data = record
        return Session(self, value, data, created, accessed, new=False)

    def encode(self, session):
        if session.new and self.cleanup_chance and random.random() < self.cleanup_chance:
            self.cleanup()
        self.write(session.id, session.created, session.accessed, dict(session),
                   session.replaces)
        return session.id if session.new or session.replaces else None

    def _record(self, created, accessed, data):
        """The JSON text a store keeps, and when it expires (whole seconds)."""
        created, accessed = int(created), int(accessed)
        text = '{"c":%d,"a":%d,"d":%s}' % (created, accessed, _to_json(data))
        return text, math.ceil(self.expires_at(created, accessed))

    @staticmethod
    def _parse(text):
        try:
            record = _json_decode(text if isinstance(text, str) else text.decode('utf-8'))
            created, accessed, data = float(record['c']), float(record['a']), record['d']
        except (ValueError, TypeError, KeyError):
            return None     # not ours, or damaged: treated as unknown
        return (created, accessed, data) if isinstance(data, dict) else None


class PickleSession(ServerSession):
    """Keeps each session in a file, ``session-<id>``, in a private directory.

    :param session_dir: the directory. By default a per-user directory in the
        system temp dir, created mode 0700 on first use. A directory that
        others can write or that another user owns is refused: unpickling a
        file someone planted there would run their code.

    Writes are atomic (a temp file, then os.replace), so a crash leaves the
    old or the new version, never a torn one. Files written by the original
    bottlesession still load; their ids are replaced when next saved.
    Any picklable value may be stored.
    """

    legacy_ids = True
    stale_temp_age = 300     # seconds after which cleanup() removes a temp file

    def __init__(self, session_dir=None, cookie_expires=DEFAULT_MAX_AGE, **options):
        super().__init__(cookie_expires, **options)
        self.session_dir = os.path.abspath(session_dir or _default_dir())
        self._ready = False
        if os.path.exists(self.session_dir):
            _check_private(self.session_dir)    # fail now, not on a request

    def _dir(self):
        if not self._ready:
            _private_dir(self.session_dir)
            self._ready = True
        return self.session_dir

    def _path(self, sid):
        if not self.valid_id(sid):      # ids never reach a path unchecked
            raise ValueError('invalid session id %r' % (sid,))
        return os.path.join(self._dir(), 'session-' + self.storage_key(sid))

    def read(self, sid):
        try:
            fd = os.open(self._path(sid), os.O_RDONLY | _O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SessionStoreError('cannot read session file: %s' % exc) from exc
        try:
            blob = chunk = os.read(fd, 65536)
            while len(chunk) == 65536:
                chunk = os.read(fd, 65536)
                blob += chunk
            record = pickle.loads(blob)
            if isinstance(record, dict):    # the original's format: the data only
                record = (os.fstat(fd).st_mtime,) * 2 + (record,)
        except OSError as exc:
            raise SessionStoreError('cannot read session file: %s' % exc) from exc
        except Exception:       # truncated or foreign file: treat as unknown
            return None
        finally:
            os.close(fd)
        if (isinstance(record, tuple) and len(record) == 3
                and isinstance(record[2], dict)):
            return record
        return None

    def write(self, sid, created, accessed, data, replaces=None):
        path = self._path(sid)
        blob = memoryview(pickle.dumps((created, accessed, data), pickle.HIGHEST_PROTOCOL))
        temp = os.path.join(self.session_dir, '.tmp-' + os.urandom(8).hex())
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SessionStoreError('cannot write session file: %s' % exc) from exc
        try:
            try:
                while blob:
                    blob = blob[os.write(fd, blob):]
            finally:
                os.close(fd)
            os.replace(temp, path)      # atomic: readers see the old or the new file
        except BaseException as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise SessionStoreError('cannot write session file: %s' % exc) from exc
            raise
        if replaces:
            self.delete(replaces)

    def delete(self, sid):
        try:
            os.unlink(self._path(sid))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SessionStoreError('cannot delete session file: %s' % exc) from exc

    def cleanup(self):
        """Remove session files not written for longer than a session can live,
        and temp files that killed writers left behind."""
        now = self.now()
        horizon = self.max_age if self.idle_timeout is None else min(self.max_age, self.idle_timeout)
        removed = 0
        with os.scandir(self._dir()) as entries:
            for entry in entries:
                if entry.name.startswith('session-'):
                    limit = horizon
                elif entry.name.startswith('.tmp-'):
                    limit = self.stale_temp_age
                else:
                    continue
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > limit:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


_POSTGRES_DRIVERS = ('psycopg', 'psycopg2', 'pg8000', 'pgdb')
_MYSQL_DRIVERS = ('MySQLdb', 'pymysql', 'mysql', 'mariadb')


def _quote(name, driver):
    """Quote a checked name (table or schema.table), so that reserved words
    like user or order work. PostgreSQL folds unquoted names to lower case;
    the name is folded the same way, so a table made unquoted is still found."""
    if driver in _MYSQL_DRIVERS:
        return '.'.join('`%s`' % part for part in name.split('.'))
    if driver in _POSTGRES_DRIVERS:
        name = name.lower()
    return '.'.join('"%s"' % part for part in name.split('.'))


def _sql_statements(driver, table, style):
    """The SQL store's statements for a DB-API driver: its quoting, its upsert,
    its placeholders."""
    name = _quote(table, driver)
    schema, _, bare = table.rpartition('.')
    index = _quote(table.replace('.', '_') + '_expires', driver)
    if driver == 'sqlite3' and schema:      # SQLite puts the schema on the index
        index, indexed = _quote(schema, driver) + '.' + index, _quote(bare, driver)
    else:
        indexed = name
    if driver in ('sqlite3',) + _POSTGRES_DRIVERS:
        upsert = ('INSERT INTO %s (id, data, expires) VALUES (?, ?, ?) ON CONFLICT (id) '
                  'DO UPDATE SET data = excluded.data, expires = excluded.expires' % name)
    elif driver in _MYSQL_DRIVERS:
        upsert = ('INSERT INTO %s (id, data, expires) VALUES (?, ?, ?) ON DUPLICATE '
                  'KEY UPDATE data = VALUES(data), expires = VALUES(expires)' % name)
    else:
        upsert = None       # UPDATE, then INSERT when no row matched
    statements = dict(
        exists='SELECT 1 FROM %s WHERE 1 = 0' % name,
        create='CREATE TABLE %s (id VARCHAR(64) PRIMARY KEY, data TEXT NOT NULL, '
               'expires BIGINT NOT NULL)' % name,
        index='CREATE INDEX %s ON %s (expires)' % (index, indexed),
        select='SELECT data FROM %s WHERE id = ? AND expires >= ?' % name,
        upsert=upsert,
        update='UPDATE %s SET data = ?, expires = ? WHERE id = ?' % name,
        insert='INSERT INTO %s (id, data, expires) VALUES (?, ?, ?)' % name,
        delete='DELETE FROM %s WHERE id = ?' % name,
        cleanup='DELETE FROM %s WHERE expires < ?' % name)
    for key, query in statements.items():
        if query and style != 'qmark':
            parts = query.split('?')
            if style in ('format', 'pyformat'):
                marks = ['%s'] * (len(parts) - 1)
            else:
                marks = [(':%d' if style == 'numeric' else ':p%d') % n
                         for n in range(1, len(parts))]
            statements[key] = ''.join(p + m for p, m in zip(parts, marks + ['']))
    return statements


def _connection_lost(conn, error):
    """Whether `error` broke the connection itself, not just one statement.

    Only then is another connection worth a try. Told from what drivers show,
    as none is imported here: psycopg's closed and broken, PyMySQL's and
    MySQLdb's open, and the SQLSTATE class 08, connection exception."""
    if getattr(conn, 'broken', False) or getattr(conn, 'closed', False):
        return True
    if not getattr(conn, 'open', True):
        return True
    state = getattr(error, 'sqlstate', None) or getattr(error, 'pgcode', None)
    return isinstance(state, str) and state.startswith('08')


def _table_exists(conn, sql):
    cur = conn.cursor()
    try:
        cur.execute(sql['exists'])
        return True
    except Exception as exc:
        if _connection_lost(conn, exc):
            raise
        conn.rollback()
        return False
    finally:
        cur.close()


def _sqlite_factory(path):
    """A factory of connections to the SQLite file `path`, or by default to a file
    in the private per-user directory. A path given is checked now: its
    directory must be private, and the file, if there, this user's alone."""
    private = path is None
    path = os.path.abspath(os.path.join(_default_dir(), 'sessions.sqlite3')
                           if private else os.fspath(path))
    if not private:
        _check_private(os.path.dirname(path), 'directory of the session database',
                       _PLANTED_SQLITE)
        try:
            _check_owner(path, os.stat(path), 'session database', _PLANTED_SQLITE)
        except FileNotFoundError:
            pass

    def connect():
        import sqlite3
        if private:
            _private_dir(os.path.dirname(path))
        try:        # SQLite gives its -wal and -shm files the database's mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600))
            created = True
        except FileExistsError:
            created = False
        conn = sqlite3.connect(path, timeout=30)
        if created:     # WAL on our own database only: it changes the file for all
            conn.execute('PRAGMA journal_mode=WAL')     # readers never wait on a writer
        if conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal':
            conn.execute('PRAGMA synchronous=NORMAL')   # durable enough with WAL
        return conn
    return connect


class SQLSession(ServerSession):
    """Keeps sessions in a SQL table, through any DB-API 2 driver.

    :param database: a pool: anything with a ``connection()`` context manager,
        such as psycopg_pool.ConnectionPool; or a connection factory: a
        callable that returns a new connection; or the path of a SQLite file.
        By default a SQLite file in the private per-user directory.
    :param table: the table, created with its index if it is missing, unless
        create_table=False::

        CREATE TABLE bottlesession (id VARCHAR(64) PRIMARY KEY,
            data TEXT NOT NULL, expires BIGINT NOT NULL);
        CREATE INDEX bottlesession_expires ON bottlesession (expires);

    A pool lends a connection for each operation. With a factory each thread
    keeps its own connection, and a broken one is replaced. Only an error that
    broke the connection is tried again, once, on a new one; a statement that
    failed (a lock or statement timeout) is not run twice. The parameter style
    comes from the driver's module.
    """

    def __init__(self, database=None, table='bottlesession',
                 cookie_expires=DEFAULT_MAX_AGE, *, paramstyle=None,
                 create_table=True, **options):
        super().__init__(cookie_expires, **options)
        if not re.match(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z', table):
            raise ConfigError('table must be a plain SQL name, not %r' % (table,))
        if paramstyle not in (None, 'qmark', 'format', 'pyformat', 'numeric', 'named'):
            raise ConfigError('unknown DB-API paramstyle %r' % (paramstyle,))
        self.table, self.paramstyle, self.create_table = table, paramstyle, create_table
        self._pool = self._factory = None
        if database is None or isinstance(database, (str, os.PathLike)):
            self._factory = _sqlite_factory(database)
        elif hasattr(database, 'connection'):
            self._pool = database
        elif hasattr(database, 'cursor'):
            raise ConfigError(
                'SQLSession takes a connection factory or a pool, not a connection: one '
                'connection shared with the app mixes its transactions with the app\'s and '
                'fails across threads. Pass a factory such as lambda: psycopg.connect(...), '
                'or a pool such as psycopg_pool.ConnectionPool(...)')
        elif callable(database):
            self._factory = database
        else:
            raise TypeError('database must be a pool, a connection factory or a SQLite path')
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sql = None

    def _setup(self, conn):
        """Learn the driver's dialect from its connection; create the table and
        its index if the table is missing. Runs once, under the lock."""
        driver = type(conn).__module__.split('.')[0]
        style = self.paramstyle or getattr(sys.modules.get(driver), 'paramstyle', 'qmark')
        sql = _sql_statements(driver, self.table, style)
        if self.create_table and not _table_exists(conn, sql):
            cur = conn.cursor()
            try:
                cur.execute(sql['create'])
                cur.execute(sql['index'])
                conn.commit()
            except Exception as exc:
                if _connection_lost(conn, exc):
                    raise
                conn.rollback()
                if not _table_exists(conn, sql):    # not a race another process won
                    raise SessionStoreError(
                        'cannot create the session table %s: %s. Create it as the README '
                        'shows and pass create_table=False, or fix the name'
                        % (self.table, exc)) from exc
            finally:
                cur.close()
        self._style, self._sql = style, sql

    def _params(self, *values):
        if self._style == 'named':
            return {'p%d' % n: v for n, v in enumerate(values, 1)}
        return values

    def _connection(self):
        """This thread's connection, made by the factory when it has none."""
        conn = getattr(self._local, 'conn', None)
        if conn is None:
            conn = self._local.conn = self._factory()
        return conn

    def _forget(self, conn):
        """Close a connection that cannot be used again; the thread makes a new one."""
        if getattr(self._local, 'conn', None) is conn:
            self._local.conn = None
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, work):
        """Run work(cursor, sql) in one transaction; driver errors become SessionStoreError.

        An error that broke the connection is tried again once, on a new one,
        so the first request after a database restart succeeds. A pool drops
        the broken connection itself."""
        for retry in (True, False):
            conn = None
            try:
                if self._pool is None:
                    conn = self._connection()
                    return self._transaction(conn, work)
                with self._pool.connection() as conn:
                    return self._transaction(conn, work)
            except SessionStoreError:
                raise
            except Exception as exc:
                lost = conn is not None and _connection_lost(conn, exc)
                if lost:
                    self._forget(conn)
                if not (lost and retry):
                    raise SessionStoreError('session database failed: %s' % exc) from exc

    def _transaction(self, conn, work):
        try:
            if self._sql is None:
                with self._lock:
                    if self._sql is None:
                        self._setup(conn)
            cur = conn.cursor()
            try:
                result = work(cur, self._sql)
            finally:
                cur.close()
            conn.commit()
            return result
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                self._forget(conn)      # in no state to be used again
            raise

    def read(self, sid):
        def select(cur, sql):
            cur.execute(sql['select'], self._params(self.storage_key(sid), int(self.now())))
            return cur.fetchone()
        row = self._run(select)
        return row and self._parse(row[0])

    def write(self, sid, created, accessed, data, replaces=None):
        text, end = self._record(created, accessed, data)
        key = self.storage_key(sid)

        def store(cur, sql):
            if sql['upsert']:
                cur.execute(sql['upsert'], self._params(key, text, end))
            else:
                cur.execute(sql['update'], self._params(text, end, key))
                if cur.rowcount == 0:
                    cur.execute(sql['insert'], self._params(key, text, end))
            if replaces:
                cur.execute(sql['delete'], self._params(self.storage_key(replaces)))
        self._run(store)

    def delete(self, sid):
        key = self.storage_key(sid)
        self._run(lambda cur, sql: cur.execute(sql['delete'], self._params(key)))

    def cleanup(self):
        def purge(cur, sql):
            cur.execute(sql['cleanup'], self._params(int(self.now())))
            return cur.rowcount
        return self._run(purge)


class RedisSession(ServerSession):
    """Keeps sessions in Redis, through a redis-py compatible client you pass in.

    :param client: e.g. ``redis.Redis(host=...)`` or ``redis.RedisCluster(...)``.
    :param prefix: put before each session id to make its key.

    Expiry is enforced twice: Redis drops the key at its TTL, and the stored
    timestamps are checked on every read. cleanup() has nothing to do.
    """

    def __init__(self, client, prefix='bottlesession:', cookie_expires=DEFAULT_MAX_AGE,
                 **options):
        super().__init__(cookie_expires, **options)
        if not all(hasattr(client, name) for name in ('get', 'set', 'delete')):
            raise TypeError('client must be a redis-py compatible client')
        if not isinstance(prefix, str):
            raise TypeError('prefix must be a str, not %r' % (prefix,))
        self.client, self.prefix = client, prefix
        # A cluster client cannot run a transaction over two keys, which may
        # live on different nodes; it writes the new key before deleting the old.
        self._atomic = hasattr(client, 'pipeline') and not hasattr(client, 'get_nodes')

    def _call(self, work):
        try:
            return work()
        except SessionStoreError:
            raise
        except Exception as exc:    # redis-py's errors; the module is not imported
            raise SessionStoreError('session store (Redis) failed: %s' % exc) from exc

    def _name(self, sid):
        return self.prefix + self.storage_key(sid)

    def read(self, sid):
        text = self._call(lambda: self.client.get(self._name(sid)))
        return None if text is None else self._parse(text)

    def write(self, sid, created, accessed, data, replaces=None):
        text, end = self._record(created, accessed, data)
        ttl = max(1, math.ceil(end - self.now()))
        key, old = self._name(sid), replaces and self._name(replaces)

        def store():
            if old and self._atomic:
                pipe = self.client.pipeline(transaction=True)
                pipe.set(key, text, ex=ttl)
                pipe.delete(old)
                pipe.execute()
            else:
                self.client.set(key, text, ex=ttl)
                if old:
                    self.client.delete(old)
        self._call(store)

    def delete(self, sid):
        key = self._name(sid)
        self._call(lambda: self.client.delete(key))


###############################################################################
# The Bottle plugin ###########################################################
###############################################################################

class SessionPlugin:
    """Pass the session to handlers that take a `session` argument; save it if modified.

    The session is saved when the handler returns, or raises an HTTPResponse
    such as bottle.redirect() or abort(); not when it fails with another
    exception. Routes without the argument are not wrapped at all. A route
    can turn saving off with ``@route(..., session={'autosave': False})``.
    """

    name = 'session'
    api = 2

    def __init__(self, session_manager, keyword='session', autosave=True):
        if not isinstance(session_manager, BaseSession):
            raise TypeError('SessionPlugin needs a session manager, such as CookieSession()')
        self.session_manager, self.keyword, self.autosave = session_manager, keyword, autosave

    def setup(self, app):
        for other in app.plugins:
            if other is not self and getattr(other, 'keyword', None) == self.keyword:
                raise bottle.PluginError('another plugin already uses the keyword %r'
                                         % self.keyword)

    def apply(self, callback, route):
        keyword = route.config.get('session.keyword', self.keyword)
        autosave = route.config.get('session.autosave', self.autosave)
        if keyword not in _callback_args(route):
            return callback
        manager = self.session_manager

        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            session = kwargs[keyword] = manager.get_session()
            try:
                result = callback(*args, **kwargs)
            except SessionStoreError:
                raise
            except bottle.HTTPResponse as response:
                if autosave and session.modified:
                    manager._save(session, response)
                raise
            if autosave and session.modified:
                target = result if isinstance(result, bottle.HTTPResponse) else bottle.response
                manager._save(session, target)
            return result
        return wrapper

    def close(self):
        pass


def _callback_args(route):
    try:        # follows functools.wraps, so decorated handlers are seen through
        return inspect.signature(route.callback).parameters
    except (TypeError, ValueError):
        return route.get_callback_args()


Plugin = SessionPlugin


###############################################################################
# The authenticator ###########################################################
###############################################################################

def _safe_path(target):
    """True for a same-site path like '/a?b=1'; false for URLs, '//host',
    '/\\host', whitespace, control characters and over-long values."""
    return (isinstance(target, str) and len(target) <= 2048
            and _SAFE_PATH_RE.match(target) is not None)


def _current_path():
    path = urllib.parse.quote(bottle.request.fullpath, safe="/:@!$&'()*+,;=-._~")
    query = bottle.request.query_string
    if query:
        path += '?' + urllib.parse.quote(query, safe="/:@!$&'()*+,;=-._~?%")
    return path


def authenticator(session_manager, login_url='/auth/login', verify=None):
    """Make `valid_user`, a decorator factory that requires a logged-in session.

    A visitor whose session is not valid is redirected to the login URL; the
    page they asked for is remembered (a same-site path only) in the
    'validuserloginredirect' cookie, for redirect_back(). session['name']
    becomes environ['REMOTE_USER']. `verify(session)`, if given, runs on
    every request; when it returns false the session is invalidated, e.g.
    because the user was deleted or changed their password.
    """
    def valid_user(login_url=login_url, verify=verify):
        def decorator(handler):
            @functools.wraps(handler)
            def check_auth(*args, **kwargs):
                session = session_manager.get_session()
                if session.get('valid') and verify is not None and not verify(session):
                    session_manager.invalidate(session)
                if not session.get('valid'):
                    target = _current_path()
                    if _safe_path(target):
                        bottle.response.set_cookie(
                            REDIRECT_COOKIE, target, path='/', max_age=3600,
                            httponly=True, secure=session_manager.secure, samesite='Lax')
                    bottle.redirect(login_url)
                if session.get('name'):
                    bottle.request.environ['REMOTE_USER'] = str(session['name'])
                return handler(*args, **kwargs)
            return check_auth
        return decorator
    return valid_user


def redirect_back(default='/'):
    """Redirect to the page remembered by the authenticator, if it is a safe
    same-site path, else to `default`. Call it at the end of a login handler."""
    target = bottle.request.get_cookie(REDIRECT_COOKIE)
    bottle.response.delete_cookie(REDIRECT_COOKIE, path='/')
    bottle.redirect(target if _safe_path(target) else default)
