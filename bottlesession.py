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
    signature = base64url(HMAC-SHA256(key, context payload "." timestamp))
    context   = cookie_name "\\0" path "\\0" domain "\\0"      (domain "" if unset;
                [namespace "\\0"] follows when namespace= is given)
    key       = HMAC-SHA256(secret, "bottlesession.cookie-session")

base64url is RFC 4648 without padding, so the value needs no quoting. For
example, with secret "0123456789abcdef", cookie_name "session_data", path
"/", no domain, created and signed at 1700000000::

    session_data=eyJjIjoxNzAwMDAwMDAwLCJkIjp7InNlc3Npb25pZCI6IkFBQUFBQUFBQUFBQUFB
    QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUEiLCJ2YWxpZCI6ZmFsc2V9fQ.1700000000.
    or_NV7VmiXs8_oKQr6_gb8Ge8zSTD2Vz2mKMR1n00wE          (one line)

Caveats. A signed cookie is not encrypted: the client can read it. It cannot
be revoked: a copy can be replayed until it expires, so keep cookie_expires
short or use a server-side store where logout must end the session
everywhere. Browsers drop cookies over about 4 KB; CookieSession raises
SessionTooLarge rather than let that log the user out in silence.
"""

__author__ = 'The bottlesession authors'
__version__ = '2.0.0'
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
    'hash_password', 'check_password', 'needs_rehash',
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
import traceback
import urllib.parse
import uuid
import warnings
import zlib

try:
    import fcntl        # POSIX: the file store's locks
except ImportError:
    fcntl = None

import bottle

_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_DIRECTORY = getattr(os, 'O_DIRECTORY', 0)
_log = logging.getLogger('bottlesession')
DEFAULT_MAX_AGE = 30 * 24 * 3600     # the original's cookie_expires: 30 days
MAX_LIFETIME = 400 * 24 * 3600       # browsers cap cookie lifetimes here (RFC 6265bis)
COOKIE_LIMIT = 4093                  # bytes of name=value browsers keep for sure
ID_LENGTH = 43                       # secrets.token_urlsafe(32): 256 random bits
REDIRECT_COOKIE = 'validuserloginredirect'
_MAX_CANDIDATES = 8                  # session cookies of one name we try per request
_UNSAFE_METHODS = frozenset(['POST', 'PUT', 'PATCH', 'DELETE'])
_CDN_HEADERS = ('Cdn-Cache-Control', 'Surrogate-Control')     # as bottle spells them

_ID_RE = re.compile(r'[A-Za-z0-9_-]{%d}\Z' % ID_LENGTH)
_LEGACY_ID_RE = re.compile(                             # the original's uuid4 ids
    r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z')
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 6265 cookie name
_ATTR_RE = re.compile(r'[\x21-\x3a\x3c-\x7e]+\Z')         # printable, no ';'
_SAFE_PATH_RE = re.compile(r'/(?![/\\])[\x21-\x5b\x5d-\x7e]*\Z')  # no '\\'


###############################################################################
# Errors ######################################################################
###############################################################################

class SessionError(Exception):
    """The base of every error this module raises."""


class BadSession(SessionError):
    """The client sent a session cookie or id that cannot be trusted.

    Never reaches the application: the request gets a fresh session."""


class BadSignature(BadSession):
    """The signature does not match the payload under any key."""


class SessionTooLarge(SessionError, ValueError):
    """The session is too large to store: browsers drop cookies over 4 KB
    silently, and a compressed cookie may not inflate past max_decompressed."""

    def __init__(self, size, limit):
        super().__init__('the session would be %d bytes, over the limit of %d (browsers '
                         'drop cookies over %d). Keep less in the session or use a '
                         'server-side store.' % (size, limit, COOKIE_LIMIT))
        self.size, self.limit = size, limit


class SessionStoreError(SessionError, bottle.HTTPError):
    """The store failed or cannot be reached. Raised from the driver's error.

    It is a bottle.HTTPError too, so even code that calls get_session()
    directly answers 503. The page says only that the session store is
    unavailable; the driver's message, which may name hosts, ports and paths,
    is in str(error) and is logged to the 'bottlesession' logger."""

    public_message = 'The session store is unavailable. Please try again in a moment.'

    def __init__(self, message):
        bottle.HTTPError.__init__(self, 503, self.public_message)
        self.args = (message,)
        _log.error('%s', message)

    def __str__(self):
        return self.args[0]


class ConfigError(SessionError, ValueError):
    """The session manager was configured wrongly. Raised at construction."""


class InsecureSecretWarning(UserWarning):
    """The signing secret is weak: short, or derived from the machine."""


###############################################################################
# Helpers #####################################################################
###############################################################################

def _new_id():
    """A fresh session id: 256 random bits, URL- and cookie-safe."""
    return secrets.token_urlsafe(32)


def _seconds(value, name):
    """A lifetime in seconds: positive, finite and at most MAX_LIFETIME."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError('%s must be a number of seconds or a timedelta, not %r'
                        % (name, value))
    if not 0 < value <= MAX_LIFETIME:     # also refuses nan, inf and 10**400
        raise ConfigError('%s must be more than 0 and at most 400 days (%d s), not %r'
                          % (name, MAX_LIFETIME, value))
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


_COOKIE_ESCAPE_RE = re.compile(r'\\(?:([0-3][0-7][0-7])|(.))')


def _cookie_values(environ, name):
    """The values of cookie `name` in the request, in order, unquoted.

    Reads the header directly: SimpleCookie would parse every cookie in it,
    costs more than the rest of a session lookup, and gives up on a header
    with one odd cookie in it (which a sibling subdomain can plant)."""
    header = environ.get('HTTP_COOKIE')
    if not header or name not in header:
        return ()
    found = []
    for part in header.split(';'):
        key, eq, value = part.partition('=')
        if eq and key.strip() == name:
            value = value.strip()
            if len(value) > 1 and value[0] == value[-1] == '"':     # RFC 6265 quoting
                value = _COOKIE_ESCAPE_RE.sub(
                    lambda m: chr(int(m.group(1), 8)) if m.group(1) else m.group(2),
                    value[1:-1])
            found.append(value)
            if len(found) == _MAX_CANDIDATES:
                break
    return found


def _apply_headers(response, cookies):
    """Write a session's headers onto the response that will be sent.

    The response depends on the session, so shared caches must not keep it
    (Cache-Control: private unless the app set its own, and Vary: Cookie). A
    response that sets a cookie of ours ({name: Set-Cookie header}) is never
    publicly cacheable, whatever the app set. This writes to bottle's header
    dict (name -> list of values, the same in 0.12 and 0.13) directly: its
    accessors cost more than the rest of a session read, and our values were
    checked for CR and LF in __init__."""
    headers = response._headers
    vary = headers.setdefault('Vary', ['Cookie'])
    if vary[-1] != 'Cookie' and 'cookie' not in [
            v.strip().lower() for v in ','.join(vary).split(',')]:
        vary[-1] += ', Cookie'
    control = headers.setdefault('Cache-Control', ['private'])
    if not cookies:
        return
    if 'Cdn-Cache-Control' in headers or 'Surrogate-Control' in headers:
        for name in _CDN_HEADERS:   # CDNs obey these before Cache-Control
            headers.pop(name, None)
    if control[-1] != 'private':
        kept = [d.strip() for d in ','.join(control).split(',') if d.strip() and
                d.split('=')[0].strip().lower() not in ('public', 'private', 's-maxage')]
        control[:] = [', '.join(['private'] + kept)]
    sent = headers.setdefault('Set-Cookie', [])
    for name, header in cookies.items():
        prefix = name + '='
        sent[:] = [c for c in sent if not c.startswith(prefix)]
        sent.append(header)


def _private_dir(path):
    """Create `path` mode 0700 if missing; refuse it if others could write it,
    or if it is a symlink (another user could point it elsewhere)."""
    _make_dir(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError('cannot use session directory %r: %s' % (path, exc)) from exc
    _check_private(path, st)
    return path


def _open_private_dir(path):
    """Open `path`, made mode 0700 if missing, as a directory descriptor.

    A symlink is refused, and the owner and mode are checked on the open
    descriptor: what was checked is what every later dir_fd= call uses."""
    _make_dir(path)
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError('session directory %r is a symlink: another user could '
                              'point it elsewhere. Give the real path.' % path) from None
        raise ConfigError('cannot use session directory %r: %s' % (path, exc)) from exc
    try:
        _check_private(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_dir(path):
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError('cannot create session directory %r: %s' % (path, exc)) from exc


_PLANTED_PICKLE = 'can plant session files, and unpickling them runs their code'
_PLANTED_SQLITE = 'can plant a session database, and with it a signed-in session'


def _check_private(path, st, what='session directory', planted=_PLANTED_PICKLE):
    """Refuse a directory (`st` its stat) that is not this user's alone."""
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
    """A secret for this machine, for when none is given; it warns.

    SHA-256 of the node id, the boot time and 32 random bytes that are made
    once and kept in a 0600 file, 'machine-secret', in the per-user private
    directory (the default session directory). It stays the same across
    restarts, and nobody can compute it without reading that file. It is
    lost with that directory (a temp cleaner, a reboot that clears /tmp),
    which ends every session; it differs per machine, so several servers
    cannot share sessions. Pass secret= or secret_file= in production."""
    node = uuid.getnode()
    if node >> 40 & 1:      # multicast bit: uuid made the node id up at random
        raise ConfigError('no secret was given and this machine has no stable node '
                          'id to derive one from: pass secret= or secret_file=')
    warnings.warn(InsecureSecretWarning(
        'no secret given: derived one from this machine and a random key kept in '
        '%s. Sessions end when that directory is lost (a temp cleaner, a reboot), '
        'and the key is per machine, so several servers cannot share sessions. '
        'Pass secret= or secret_file=.' % _default_dir()), stacklevel=_stacklevel)
    seed = b'bottlesession:%d:%d:' % (node, _boot_time())
    return hashlib.sha256(seed + _machine_key()).hexdigest().encode('ascii')


def _machine_key():
    """The 32 random bytes machine_secret() mixes in, made once, kept private."""
    path = os.path.join(_default_dir(), 'machine-secret')
    name = 'machine-secret'
    directory = None
    try:
        directory = _open_private_dir(_default_dir())
        try:
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW, dir_fd=directory)
        except FileNotFoundError:
            # Write it whole under a temp name, then link: a process starting
            # at the same moment reads ours or keeps its own, never half.
            temp = '%s.%s' % (name, secrets.token_hex(8))
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600,
                         dir_fd=directory)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
            except FileExistsError:
                pass
            finally:
                os.unlink(temp, dir_fd=directory)
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW, dir_fd=directory)
        try:
            st = os.fstat(fd)
            key = os.read(fd, 33)
        finally:
            os.close(fd)
    except (OSError, ConfigError) as exc:
        raise ConfigError('no secret was given, and the key to derive one cannot be '
                          'kept in %r (%s): pass secret= or secret_file=' % (path, exc)) from exc
    finally:
        if directory is not None:
            os.close(directory)
    if (not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or len(key) != 32
            or (hasattr(os, 'geteuid') and st.st_uid != os.geteuid())):
        raise ConfigError('no secret was given, and %r is not a private 32-byte key '
                          'file of this user: pass secret= or secret_file=' % path)
    return key


def _load_secrets(secret, secret_file):
    """The list of secrets as bytes, newest first, from the constructor's arguments."""
    if isinstance(secret, (list, tuple)):
        found = list(secret)
        if not found:
            raise ConfigError('secret is an empty list: give at least one secret')
    elif secret is not None:
        if not secret:      # os.environ.get('SECRET', '') must not mean "derive one"
            raise ConfigError('secret is empty: give a secret, or leave it out to '
                              'derive one from the machine')
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
        # HMAC (RFC 2104) from two SHA-256 states per secret, keyed once, the
        # context already fed in: copying a hashlib state costs a fraction of
        # what an hmac object does, and this runs twice per saved cookie.
        self._keys = []
        for secret in secrets:
            key = derive_key(secret, salt).ljust(64, b'\0')     # SHA-256's block size
            inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + context + b'\0')
            self._keys.append((inner, hashlib.sha256(bytes(b ^ 0x5c for b in key))))

    def signature(self, message, index=0):
        inner, outer = self._keys[index]
        inner, outer = inner.copy(), outer.copy()
        inner.update(message)
        outer.update(inner.digest())
        return _b64encode(outer.digest())

    def sign(self, message):
        return message + b'.' + self.signature(message)

    def unsign(self, signed):
        """Return (message, index of the secret that verified) or raise BadSignature."""
        message, dot, sig = signed.rpartition(b'.')
        if not dot:
            raise BadSignature('no signature')
        for index in range(len(self._keys)):
            if hmac.compare_digest(sig, self.signature(message, index)):
                return message, index
        raise BadSignature('signature does not match')


###############################################################################
# The session object ##########################################################
###############################################################################

_SCALARS = (str, int, float, bool, type(None), bytes)
_MISSING = object()
_EXPIRY_KEY, _CSRF_KEY = '_expiry', '_csrf'     # kept in the data, so every store has them


class Session(dict):
    """The session: a dict that knows its id and whether it is new or modified.

    Changes through the dict methods set `modified`; a call that changes
    nothing (``pop('flash', None)`` on a session without it, setting a key
    to the string or number it already holds) does not. A change inside a
    value (``session['cart'].append(x)``) is not seen: set
    ``session.modified = True``. Keys 'sessionid' and 'valid' are there from
    the start, as in the original.
    """

    __slots__ = ('manager', 'id', 'created', 'accessed', 'new', 'modified', 'replaces',
                 'login_state', 'touch', 'managed', 'cookies', 'csrf_secret', 'csrf_fresh',
                 'expiry_sent', 'version')

    def __init__(self, manager, sid, data=(), created=None, accessed=None, new=True):
        dict.__init__(self, data)
        self.manager = manager
        self.created = created
        self.accessed = accessed
        self.new = new
        self.touch = self.managed = self.csrf_fresh = self.modified = False
        self.cookies = None                 # {name: Set-Cookie header} to send
        self.csrf_secret = None             # a visitor's, while nothing is stored
        self.expiry_sent = None             # set_expiry() as loaded: a change re-sends
        self.version = None                 # the stored record as loaded (server stores)
        self.replaces = None                # an id to delete when this session is saved
        self.id = sid                       # (what _attach() does, spelt out: it is hot)
        dict.__setitem__(self, 'sessionid', sid)
        if 'valid' not in self:
            dict.__setitem__(self, 'valid', False)
        self.login_state = bool(self['valid']), self.get('name')

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

    def set_expiry(self, value):
        """End this session `value` seconds (or a timedelta) from now, at most
        400 days; 0 for a browser-session cookie (the server still ends it at
        cookie_expires); None for the store's default. Kept across login."""
        if value is None:
            self.pop(_EXPIRY_KEY, None)
        elif value == 0 and not isinstance(value, bool):
            self[_EXPIRY_KEY] = 0
        else:
            self[_EXPIRY_KEY] = int(self.manager.now() + _seconds(value, 'expiry'))

    def csrf_token(self):
        """A token for this session's forms: a field named csrf_token, or an
        X-CSRF-Token header. A new string each call (against BREACH); each is
        valid until the session logs in or out."""
        return self.manager.csrf_token(self)

    def check_csrf(self):
        """Abort with 403 unless this request carries a valid token. The
        plugin does this for you on POST, PUT, PATCH and DELETE."""
        self.manager.check_csrf(self)

    def __setitem__(self, key, value):
        old = dict.get(self, key, _MISSING)
        if type(old) is not type(value) or type(value) not in _SCALARS or old != value:
            self.modified = True
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        self.modified = True

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self):
        """Remove all data. The id stays, and the session is no longer logged in."""
        dict.clear(self)
        dict.update(self, sessionid=self.id, valid=False)
        self.modified = True

    def pop(self, key, *default):
        if key in self:
            self.modified = True
        return dict.pop(self, key, *default)

    def popitem(self):
        item = dict.popitem(self)
        self.modified = True
        return item

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __repr__(self):
        data = {key: value for key, value in self.items() if key != 'sessionid'}
        return '<Session %s… %r>' % (self.id[:6], data)

    # Flash messages, with Flask's names ######################################

    flash_key = '_flashes'      # their one key: a JSON list of [category, message]

    def flash(self, message, category='message'):
        """Queue a message for the next page that calls get_flashed_messages().

        It is kept in the session, so it survives a redirect in every store;
        it must be JSON-serialisable (a str is)."""
        self[self.flash_key] = self.get(self.flash_key, []) + [[category, message]]

    def get_flashed_messages(self, with_categories=False, category_filter=()):
        """Return the queued messages and remove them from the session.

        with_categories=True gives (category, message) tuples. category_filter
        returns and removes only the messages of those categories. With
        nothing to return, the session is left unmodified. Unlike Flask, a
        second call in the same request does not return the same messages."""
        queued = self.get(self.flash_key) or []
        shown = [m for m in queued if not category_filter or m[0] in category_filter]
        if shown:
            kept = [m for m in queued if category_filter and m[0] not in category_filter]
            if kept:
                self[self.flash_key] = kept
            else:
                del self[self.flash_key]
        return [tuple(m) for m in shown] if with_categories else [m[1] for m in shown]


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
    :param namespace: a name for this app, for apps that share a secret or a
        store and the cookie's name, path and domain: sessions of one are then
        unknown to the other.

    Lifetimes are at most 400 days, as browsers cap them. A store subclass
    says only how to `load` a session from a cookie value, how to `persist`
    one (returning the cookie value to send, if it changed) and how to
    `delete` one.
    """

    def __init__(self, cookie_expires=DEFAULT_MAX_AGE, *, idle_timeout=None,
                 cookie_name='sessionid', path='/', domain=None, secure=False,
                 httponly=True, samesite='Lax', namespace=None):
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
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError('namespace must be a str, not %r' % (namespace,))
        namespace = namespace or None       # '' is no namespace, in every store
        self.cookie_name, self.path, self.domain = cookie_name, path, domain
        self.namespace = namespace
        self.secure, self.httponly, self.samesite = bool(secure), bool(httponly), samesite
        self._attrs = ''.join(['; Path=' + path,
                               '; Domain=' + domain if domain else '',
                               '; Secure' if secure else '',
                               '; HttpOnly' if httponly else '',
                               '; SameSite=' + samesite if samesite else ''])
        # Per manager, not per cookie name: two managers may share a name.
        self._environ_key = 'bottlesession.%x' % id(self)
        self._csrf_cookie = cookie_name + '_csrf'
        # Refresh the idle clock at most this often, so reads rarely write.
        self._touch_after = self.idle_timeout and self.idle_timeout / 10

    def now(self):
        """The time in seconds. Every expiry decision reads the clock here."""
        return time.time()

    def expires_at(self, created, accessed, data=None):
        """When a session ends unless it is used again, in epoch seconds.

        The one expiry rule: at the end set by Session.set_expiry(), else
        max_age after creation (or the last login); and idle_timeout after
        the last use, whichever comes first."""
        end = created + self.max_age
        if data and _EXPIRY_KEY in data:
            chosen = data[_EXPIRY_KEY]
            if type(chosen) in (int, float) and chosen > 0:
                end = chosen
        if self.idle_timeout is not None:
            end = min(end, accessed + self.idle_timeout)
        return end

    def _cookie_header(self, value, max_age, name=None):
        """The one place a Set-Cookie header is built: max_age None for a
        browser-session cookie, 0 to expire it. `name` is the session cookie's
        unless given (the visitor's CSRF cookie)."""
        name = name or self.cookie_name
        if max_age is None:
            return '%s=%s%s' % (name, value, self._attrs)
        if max_age == 0:
            return '%s=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT%s' % (
                name, self._attrs)
        return '%s=%s; Max-Age=%d%s' % (name, value, max_age, self._attrs)

    # The store's part ########################################################

    def load(self, value):
        """Return the Session for a cookie value, or raise BadSession."""
        raise NotImplementedError

    def persist(self, session):
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
        session = self._current()
        if not session.managed:     # no plugin or valid_user will commit it
            if session.touch:
                self._save(session)
            _apply_headers(bottle.response, session.cookies)
        return session

    def _current(self, managed=False):
        environ = bottle.request.environ
        session = environ.get(self._environ_key)
        if session is None:
            session = environ[self._environ_key] = self._load(environ)
        if managed:
            session.managed = True
        return session

    def _load(self, environ):
        now = self.now()
        for value in _cookie_values(environ, self.cookie_name):
            try:
                session = self.load(value)
            except BadSession:
                continue
            if now > self.expires_at(session.created, session.accessed, session):
                self.delete(session.id)         # expired: gone on the server too
                continue
            if self._touch_after and now - session.accessed > self._touch_after:
                session.touch = True
            return session
        return Session(self, _new_id(), created=now, accessed=now)

    def _handle(self, session, handler, args, kwargs, autosave, csrf=False):
        """Run a handler, then commit the session onto the response Bottle sends.

        That is the returned body's bottle.response, a returned HTTPResponse
        (static_file() too), or a raised redirect(), abort() or HTTPError:
        Bottle drops the headers of bottle.response for the last two. A
        handler that fails with another exception saves nothing."""
        try:
            if csrf and bottle.request.environ['REQUEST_METHOD'].upper() in _UNSAFE_METHODS:
                self.check_csrf(session)
            result = handler(*args, **kwargs)
        except SessionStoreError:
            raise
        except bottle.HTTPResponse as response:
            self._commit(session, response, autosave)
            raise
        except Exception as exc:
            if not session.cookies:
                raise
            # A logout or login that then crashed: Bottle's own 500 would
            # drop the cookie, and a logged-out user would stay logged in.
            trace = traceback.format_exc()
            bottle.request.environ['wsgi.errors'].write(trace)
            error = bottle.HTTPError(500, 'Internal Server Error', exc, trace)
            _apply_headers(error, session.cookies)
            raise error from exc
        self._commit(session, result if isinstance(result, bottle.HTTPResponse)
                     else bottle.response, autosave)
        return result

    def _commit(self, session, response, autosave):
        """Save the session if due (at most once), then write its headers."""
        if autosave and session.modified:
            self._save(session)
        elif session.touch:
            try:
                self._save(session)
            except SessionStoreError as exc:     # the page only read the session: serve it
                _log.warning('could not refresh the idle clock of a session: %s', exc)
        _apply_headers(response, session.cookies)

    def save(self, session):
        """Store the session and send its cookie. Rotates the id at login.

        Original-API code may pass a plain dict: it becomes the request's
        session data."""
        if not isinstance(session, Session):
            if not isinstance(session, dict):
                raise TypeError('save() takes the session that get_session() returned')
            data, session = dict(session), self._current()
            dict.clear(session)
            dict.update(session, data, sessionid=session.id)
            dict.setdefault(session, 'valid', False)
            session.modified = True
        elif session.manager is not self:
            raise TypeError('save() takes a session of this manager')
        self._save(session)
        _apply_headers(bottle.response, session.cookies)

    def _save(self, session):
        now = self.now()
        login = bool(session.get('valid')), session.get('name')
        if session.login_state != login:    # a login or a logout:
            if not session.csrf_fresh:
                dict.pop(session, _CSRF_KEY, None)      # a new CSRF token,
            if not session.new:
                self._rotate(session, now)              # and a new id (fixation)
        elif session.new and session.csrf_secret:   # the visitor's token goes along
            dict.__setitem__(session, _CSRF_KEY, session.csrf_secret)
        if len(session.id) != ID_LENGTH:
            self._rotate(session, now)      # upgrade a uuid4 id the original made
        session.accessed = now
        value = self.persist(session)
        if value is not None:
            end = session.get(_EXPIRY_KEY)
            if end is None and self.cookie_expires is not None:
                max_age = max(0, math.ceil(session.created + self.max_age - now))
            elif end:       # the absolute end: idle time is the server's business
                max_age = max(0, math.ceil(self.expires_at(session.created, math.inf, session)
                                           - now))
            else:
                max_age = None                  # a browser-session cookie
            header = self._cookie_header(value, max_age)
            if session.cookies is None:
                session.cookies = {self.cookie_name: header}
            else:
                session.cookies[self.cookie_name] = header
        session.new = session.modified = session.touch = False
        session.expiry_sent = session.get(_EXPIRY_KEY)
        session.replaces = None
        session.login_state = login

    def _rotate(self, session, now):
        replaces = session.replaces or (None if session.new else session.id)
        session._attach(_new_id())
        session.replaces = replaces
        session.created = now
        session.modified = True

    def regenerate(self, session):
        """Give the session a new id, keep its data and delete the old id; save it."""
        self._rotate(session, self.now())
        self.save(session)

    def invalidate(self, session):
        """Delete the session's stored data and expire its cookie.

        The same object becomes a fresh, empty, anonymous session."""
        for sid in (session.replaces, None if session.new else session.id):
            if sid:
                self.delete(sid)
        now = self.now()
        dict.clear(session)
        session._attach(_new_id())
        session.new, session.created, session.accessed = True, now, now
        session.touch, session.csrf_secret = False, None
        self._send(session, self.cookie_name, self._cookie_header('', 0))
        if _cookie_values(bottle.request.environ, self._csrf_cookie):
            self._send(session, self._csrf_cookie,
                       self._cookie_header('', 0, self._csrf_cookie))
        _apply_headers(bottle.response, session.cookies)

    @staticmethod
    def _send(session, name, header):
        if session.cookies is None:
            session.cookies = {}
        session.cookies[name] = header

    # CSRF ####################################################################
    # The secret is 32 random bytes in the session. A visitor with nothing
    # stored keeps it in a cookie of its own, so showing a form stores
    # nothing; it moves into the session when that is first saved, and is
    # replaced at login and logout. A token is the secret masked with fresh
    # random bytes, as Django does, so it differs in every response (BREACH).

    def _csrf_secret(self, session, create):
        secret = session.get(_CSRF_KEY)
        if create and session.login_state != session._login() and not session.csrf_fresh:
            # A login (or logout) this request makes: its token is the new one.
            session.csrf_fresh = True
            dict.__setitem__(session, _CSRF_KEY, _new_id())
            return session[_CSRF_KEY]
        if isinstance(secret, str) and _ID_RE.match(secret):
            return secret
        if session.csrf_secret is None and session.new:
            name = self._csrf_cookie
            for value in _cookie_values(bottle.request.environ, name):
                if _ID_RE.match(value):
                    session.csrf_secret = value
                    break
            else:
                if not create:
                    return None
                session.csrf_secret = _new_id()
                self._send(session, name, self._cookie_header(session.csrf_secret, None, name))
                if not session.managed:     # get_session() has written its headers
                    _apply_headers(bottle.response, session.cookies)
        if session.csrf_secret is None:
            if not create:
                return None
            session[_CSRF_KEY] = secret = _new_id()     # a stored session: saved with it
            if not session.managed:     # no wrapper will save it: the original API
                self.save(session)
            return secret
        return session.csrf_secret

    def csrf_token(self, session):
        """See Session.csrf_token()."""
        secret = _b64decode(self._csrf_secret(session, True).encode('ascii'))
        mask = secrets.token_bytes(32)
        return _b64encode(mask + bytes(a ^ b for a, b in zip(mask, secret))).decode('ascii')

    def check_csrf(self, session):
        """See Session.check_csrf()."""
        request = bottle.request
        token = request.environ.get('HTTP_X_CSRF_TOKEN')
        if not token:
            try:
                token = request.forms.get('csrf_token')
            except Exception:       # a body bottle cannot parse has no token either
                token = None
        secret = self._csrf_secret(session, False)
        expected = _b64decode(secret.encode('ascii')) if secret else b'\0' * 32
        try:
            raw = _b64decode(token.encode('ascii')) if token and len(token) == 86 else b''
        except (ValueError, UnicodeError):
            raw = b''
        got = bytes(a ^ b for a, b in zip(raw[:32], raw[32:]))
        if not (hmac.compare_digest(got, expected) and secret and len(raw) == 64):
            raise bottle.HTTPError(403, 'The form\'s security token is missing or wrong. '
                                        'Reload the page and try again.')


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
    expires (see the module docstring). The signature binds the cookie's
    name, path and domain, so a cookie is worthless under another of them.
    """

    salt = b'cookie-session'
    max_cookie_size = 8192       # what we even look at; a valid one is <= 4093
    max_decompressed = 256 * 1024

    def __init__(self, secret=None, secret_file=None, cookie_name='session_data',
                 secure=False, httponly=True, cookie_expires=DEFAULT_MAX_AGE, *,
                 compress=False, **options):
        super().__init__(cookie_expires, cookie_name=cookie_name, secure=secure,
                         httponly=httponly, **options)
        context = '\0'.join([self.cookie_name, self.path, self.domain or '']
                             + ([self.namespace] if self.namespace else []))
        self.signer = Signer(_load_secrets(secret, secret_file), self.salt,
                             context.encode('utf-8'))
        self.compress = compress

    def load(self, value):
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

    def persist(self, session):
        raw = ('{"c":%d,"d":%s}' % (session.created, _to_json(session))).encode('ascii')
        payload = _b64encode(raw)
        if self.compress:
            if len(raw) > self.max_decompressed:    # load() would refuse it: a silent logout
                raise SessionTooLarge(len(raw), self.max_decompressed)
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


def _merge(base, ours, theirs):
    """Apply the changes from `base` to `ours` onto `theirs`, a newer version.

    A key this request set, changed in place or deleted is taken from `ours`;
    every other key keeps the newer value. A key both changed: ours wins."""
    merged = dict(theirs)
    for key in base.keys() | ours.keys():
        if key not in ours:
            merged.pop(key, None)
        elif key not in base or base[key] != ours[key]:
            merged[key] = ours[key]
    # Flash messages are a queue, not a value: keep theirs, less the ones this
    # request showed, plus the ones it added.
    flashes = Session.flash_key
    queues = [d.get(flashes) if isinstance(d.get(flashes), list) else [] for d in
              (base, ours, theirs)]
    if queues[0] != queues[1]:
        shown = [m for m in queues[0] if m not in queues[1]]
        added = [m for m in queues[1] if m not in queues[0]]
        queue = [m for m in queues[2] if m not in shown] + added
        if queue:
            merged[flashes] = queue
        else:
            merged.pop(flashes, None)
    return merged


class ServerSession(BaseSession):
    """Base for stores that keep the data on the server and an id in the cookie.

    Ids are strict: a malformed id, or one the store does not hold, is never
    adopted. A subclass implements fetch, write, swap, delete and cleanup,
    and keeps session `sid` under storage_key(sid), never under the id.

    Concurrent requests on one session merge: a save writes only if the
    stored version is still the one this request loaded (compare-and-set);
    if another request changed it, this request's changes are applied to
    the newer version and the save is tried again. If the session was
    deleted meanwhile (a logout, a login's new id, expiry), the save is
    dropped, so a request in flight never brings a session back.

    :param cleanup_chance: the chance that saving a new session first runs
        cleanup(), so expired sessions go away without cron. 0 turns it off.
    """

    legacy_ids = False
    swap_attempts = 100     # compare-and-set rounds before a save gives up (503)

    def __init__(self, cookie_expires=DEFAULT_MAX_AGE, *, cleanup_chance=0.001, **options):
        super().__init__(cookie_expires, **options)
        if not 0 <= cleanup_chance <= 1:
            raise ConfigError('cleanup_chance must be between 0 and 1')
        self.cleanup_chance = cleanup_chance
        identity = _json_encode([self.cookie_name, self.path, self.domain, self.namespace])
        self._identity = hashlib.sha256(b'bottlesession.key\0%s\0' % identity.encode('utf-8'))
        self._last_key = None, None

    def storage_key(self, sid):
        """The key the store keeps session `sid` under: a hash of the id and of
        the issuing app's cookie name, path, domain and namespace.

        So another app's ids are unknown here, even on the same table or Redis
        prefix, and a copy of the stored keys gives nobody a usable cookie.
        Files the original bottlesession wrote keep their uuid4 names."""
        if self.legacy_ids and len(sid) == 36:
            return sid
        last = self._last_key           # a request reads, then saves, one id
        if last[0] == sid:
            return last[1]
        digest = self._identity.copy()
        digest.update(sid.encode('utf-8', 'surrogatepass'))
        key = digest.hexdigest()        # 64 characters: fits the SQL id column
        self._last_key = sid, key       # one tuple: threads see both or neither
        return key

    # The store's part: the stored record's exact bytes or text is its version.

    def fetch(self, sid):
        """Return (version, (created, accessed, data)) for `sid`, or None."""
        raise NotImplementedError

    def write(self, sid, created, accessed, data, replaces=None):
        """Store a session under a new id. With `replaces` (an id rotated at
        login), delete that id first, and store nothing and return False if
        it was gone: a logout meanwhile stays a logout."""
        raise NotImplementedError

    def swap(self, sid, version, created, accessed, data):
        """Store a session only if its stored version is still `version`.

        Return (new version, None) when written, (their version, their
        record) when another request changed it, or None when it is gone."""
        raise NotImplementedError

    def read(self, sid):
        """Return (created, accessed, data) for `sid`, or None."""
        found = self.fetch(sid)
        return None if found is None else found[1]

    def valid_id(self, sid):
        return bool(_ID_RE.match(sid) or (self.legacy_ids and _LEGACY_ID_RE.match(sid)))

    def load(self, value):
        if not self.valid_id(value):
            raise BadSession('malformed session id')
        found = self.fetch(value)
        if found is None:
            raise BadSession('unknown session id')
        version, (created, accessed, data) = found
        session = Session(self, value, data, created, accessed, new=False)
        session.version, session.expiry_sent = version, data.get(_EXPIRY_KEY)
        return session

    def persist(self, session):
        if session.new or session.replaces or session.version is None:     # a new id
            if session.new and self.cleanup_chance and random.random() < self.cleanup_chance:
                self.cleanup()
            if self.write(session.id, session.created, session.accessed, dict(session),
                          session.replaces) is False:
                return None     # rotating a session deleted meanwhile: stay deleted
            return session.id
        data = ours = dict(session)
        version, base = session.version, None
        for attempt in range(self.swap_attempts):
            found = self.swap(session.id, version, session.created, session.accessed, data)
            if found is None:           # deleted meanwhile: stay deleted
                return None
            version, theirs = found
            if theirs is None:
                break
            if attempt:             # racing saves: wait a little, then the newest
                time.sleep(random.random() * 0.001 * min(attempt, 5))
                found = self.fetch(session.id)
                if found is None:
                    return None
                version, theirs = found
            if base is None:            # the data as this request loaded it
                base = self.parse(session.version)[2]
            data = _merge(base, ours, theirs[2])
        else:
            raise SessionStoreError('session %s… changed under %d saves in a row'
                                    % (session.id[:6], self.swap_attempts))
        session.version = version
        if data != session:             # the newer keys, for the rest of the request
            dict.clear(session)
            dict.update(session, data)
        if session.get(_EXPIRY_KEY) != session.expiry_sent:
            return session.id
        return None

    def _record(self, created, accessed, data):
        """The JSON text a store keeps, and when it expires (whole seconds)."""
        created, accessed = int(created), int(accessed)
        text = '{"c":%d,"a":%d,"d":%s}' % (created, accessed, _to_json(data))
        return text, math.ceil(self.expires_at(created, accessed, data))

    def parse(self, text):
        """Return (created, accessed, data) from a stored version, or None.
        This reads the JSON that SQL and Redis keep; the file store unpickles."""
        try:
            record = _json_decode(text if isinstance(text, str) else text.decode('utf-8'))
            created, accessed, data = float(record['c']), float(record['a']), record['d']
        except (ValueError, TypeError, KeyError):
            return None     # not ours, or damaged: treated as unknown
        return (created, accessed, data) if isinstance(data, dict) else None


class PickleSession(ServerSession):
    """Keeps each session in a file, ``session-<id>``, in a private directory.

    :param session_dir: the directory. By default a per-user directory in the
        system temp dir. It is made mode 0700 when the store is built. A
        symlink, a directory that others can write or that another user owns
        is refused: unpickling a file someone planted there would run their
        code. It is opened once and used through that descriptor; if it is
        removed while the app runs, it is made and checked again.

    Writes are atomic (a temp file, then os.replace), so a crash leaves the
    old or the new version, never a torn one. Files written by the original
    bottlesession still load; their ids are replaced when next saved.
    Any picklable value may be stored.
    """

    legacy_ids = True
    stale_temp_age = 300     # seconds after which cleanup() removes a temp file

    def __init__(self, session_dir=None, cookie_expires=DEFAULT_MAX_AGE, **options):
        super().__init__(cookie_expires, **options)
        if fcntl is None or not {os.open, os.stat, os.rename, os.unlink} <= os.supports_dir_fd:
            raise ConfigError('PickleSession needs dir_fd support (a POSIX system)')
        self.session_dir = os.path.abspath(session_dir or _default_dir())
        # Every file operation is relative to this descriptor, so the path
        # cannot be swapped for another directory once it has been checked.
        self._dir_fd = _open_private_dir(self.session_dir)     # fail now, not on a request
        # Lock files, opened per process on first use and again after _reopen().
        self._per_process, self._generation = {}, 0

    def __del__(self):
        try:
            mine = self._per_process.get(os.getpid(), ([],))[0]
            for fd in [self._dir_fd] + [fd for fd in mine if fd is not None]:
                os.close(fd)
        except (AttributeError, OSError, TypeError):    # half-built, or at exit
            pass

    def _name(self, sid):
        if not self.valid_id(sid):      # ids never reach a path unchecked
            raise ValueError('invalid session id %r' % (sid,))
        return 'session-' + self.storage_key(sid)

    def _open(self, name, flags):
        """os.open in the directory; if the directory is gone, reopen it and retry once."""
        try:
            return os.open(name, flags | _O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
        except FileNotFoundError:
            if not self._reopen():
                raise
        return os.open(name, flags | _O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)

    def _gone(self):
        """Whether our directory was removed, or its path now names another."""
        try:
            held = os.fstat(self._dir_fd)
            named = os.stat(self.session_dir, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return held.st_nlink == 0 or (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino)

    def _reopen(self):
        """After a miss: if the directory is gone (a temp cleaner removed it, or
        another worker made it again), open the path again, checked, under the
        same descriptor number, so threads in flight never see it closed.
        Return whether to retry. Misses pay two stats; hits pay nothing."""
        if not self._gone():
            return False
        with self._process()[3]:
            if self._gone():        # else another thread has just done it
                try:
                    fd = _open_private_dir(self.session_dir)
                except ConfigError as exc:     # e.g. re-created by another user
                    raise SessionStoreError('refusing the session directory: %s' % exc) from exc
                try:
                    os.dup2(fd, self._dir_fd, inheritable=False)
                finally:
                    os.close(fd)
                self._generation += 1   # lock files of the new directory
        return True

    def fetch(self, sid):
        blob = self._read(sid)
        record = blob is not None and self.parse(blob, sid)
        return (blob, record) if record else None

    def _read(self, sid):
        """The file's bytes, or None."""
        try:
            fd = self._open(self._name(sid), os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SessionStoreError('cannot read session file: %s' % exc) from exc
        try:
            blob = chunk = os.read(fd, 65536)
            while len(chunk) == 65536:
                chunk = os.read(fd, 65536)
                blob += chunk
            return blob
        except OSError as exc:
            raise SessionStoreError('cannot read session file: %s' % exc) from exc
        finally:
            os.close(fd)

    def parse(self, blob, sid=None):
        try:
            record = pickle.loads(blob)
        except Exception:       # truncated or foreign file: treat as unknown
            return None
        if isinstance(record, dict):    # the original's format: the data only,
            try:                        # so its age is the file's
                mtime = os.stat(self._name(sid), dir_fd=self._dir_fd).st_mtime
            except (OSError, ValueError, TypeError):
                mtime = self.now()
            record = (mtime, mtime, record)
        if isinstance(record, tuple) and len(record) == 3 and isinstance(record[2], dict):
            return record
        return None

    def _lock(self, sid):
        """Take the exclusive lock for a compare-and-set on `sid`, or a delete
        of it: a thread lock, then flock on one of 16 lock files. Each process
        opens its own, so forked workers exclude each other too; the thread
        lock does that within a process, where the descriptor is shared.
        Reads never wait on it. Returns what _unlock() takes."""
        stripe = int(self._name(sid)[-2:], 16) % 16     # the name ends in hex
        fds, made, mutexes, _ = self._process()
        mutex = mutexes[stripe]
        mutex.acquire()
        try:
            if made[stripe] != self._generation:    # none yet, or in a removed directory
                if fds[stripe] is not None:
                    os.close(fds[stripe])
                    fds[stripe] = None
                fds[stripe] = self._open('.lock-%d' % stripe, os.O_RDWR | os.O_CREAT)
                made[stripe] = self._generation
            fcntl.flock(fds[stripe], fcntl.LOCK_EX)
        except BaseException as exc:
            mutex.release()
            if isinstance(exc, OSError):
                raise SessionStoreError('cannot lock session file: %s' % exc) from exc
            raise
        return fds[stripe], mutex

    def _process(self):
        """This process's lock files, when each was opened, the thread locks
        and the reopen lock. A forked worker gets its own, made fresh: none
        of its parent's may be held or shared. setdefault() picks one for
        all of its threads, however many ask at once."""
        pid = os.getpid()
        state = self._per_process.get(pid)
        if state is None:
            state = self._per_process.setdefault(pid, (
                [None] * 16, [None] * 16, [threading.Lock() for _ in range(16)],
                threading.Lock()))
        return state

    @staticmethod
    def _unlock(held):
        fd, mutex = held
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            mutex.release()

    def swap(self, sid, version, created, accessed, data):
        held = self._lock(sid)
        try:
            blob = self._read(sid)
            if blob is None:
                return None
            if blob != version:         # only now is it worth unpickling
                record = self.parse(blob, sid)
                return record and (blob, record)
            return self.write(sid, created, accessed, data), None
        finally:
            self._unlock(held)

    def write(self, sid, created, accessed, data, replaces=None):
        if replaces and not self._delete(replaces):
            return False
        name = self._name(sid)
        version = pickle.dumps((created, accessed, data), pickle.HIGHEST_PROTOCOL)
        blob = memoryview(version)
        temp = '.tmp-' + os.urandom(8).hex()
        try:
            fd = self._open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            raise SessionStoreError('cannot write session file: %s' % exc) from exc
        try:
            try:
                while blob:
                    blob = blob[os.write(fd, blob):]
            finally:
                os.close(fd)
            # Atomic: readers see the old or the new file.
            os.replace(temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except BaseException as exc:
            try:
                os.unlink(temp, dir_fd=self._dir_fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise SessionStoreError('cannot write session file: %s' % exc) from exc
            raise
        return version

    def delete(self, sid):
        self._delete(sid)

    def _delete(self, sid):
        """Delete the file of `sid`; return whether there was one."""
        held = self._lock(sid)      # not between another request's compare and set
        try:
            os.unlink(self._name(sid), dir_fd=self._dir_fd)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SessionStoreError('cannot delete session file: %s' % exc) from exc
        finally:
            self._unlock(held)

    def _lives_on(self, name):
        """Whether an old-looking file holds a session that set a longer life."""
        if not name.startswith('session-'):
            return False
        try:
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW, dir_fd=self._dir_fd)
        except OSError:
            return False
        try:
            record = self.parse(os.read(fd, 1 << 20))
        finally:
            os.close(fd)
        return (record is not None and _EXPIRY_KEY in record[2]
                and self.expires_at(*record) > self.now())

    def cleanup(self):
        """Remove session files not written for longer than a session can live
        (unless it set a longer one with set_expiry), and temp files that killed
        writers left behind."""
        now = self.now()
        horizon = self.max_age if self.idle_timeout is None else min(self.max_age, self.idle_timeout)
        removed = 0
        # A descriptor of its own: scanning moves its offset, which dups share.
        scan = os.open('.', os.O_RDONLY | _O_DIRECTORY, dir_fd=self._dir_fd)
        try:
            with os.scandir(scan) as entries:
                for entry in entries:
                    if entry.name.startswith('session-'):
                        limit = horizon
                    elif entry.name.startswith('.tmp-'):
                        limit = self.stale_temp_age
                    else:
                        continue
                    try:
                        if (now - entry.stat(follow_symlinks=False).st_mtime > limit
                                and not self._lives_on(entry.name)):
                            os.unlink(entry.name, dir_fd=scan)
                            removed += 1
                    except FileNotFoundError:
                        pass
        finally:
            os.close(scan)
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
        swap='UPDATE %s SET data = ?, expires = ? WHERE id = ? AND %s = ?' % (
            name, 'BINARY data' if driver in _MYSQL_DRIVERS else 'data'),    # exact, any collation
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


def _check_sqlite_path(path):
    """Refuse a SQLite path that another user could swap or plant: its
    directory must be this user's alone and no symlink; every directory above
    it must be root's or this user's, and writable by others only if sticky
    (as /tmp is: then nobody can rename what is ours); the file, if there,
    must be this user's alone."""
    directory = os.path.dirname(path)
    try:
        _check_private(directory, os.lstat(directory), 'directory of the session database',
                       _PLANTED_SQLITE)
        above = os.path.dirname(directory)
        while True:
            st = os.stat(above)
            if st.st_uid not in (0, os.geteuid()) or (
                    st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
                raise ConfigError('%r, above the session database, could be changed by '
                                  'another user, who %s' % (above, _PLANTED_SQLITE))
            if above == os.path.dirname(above):
                break
            above = os.path.dirname(above)
        try:
            _check_owner(path, os.lstat(path), 'session database', _PLANTED_SQLITE)
        except FileNotFoundError:
            pass            # made by the first connection
    except OSError as exc:
        raise ConfigError('cannot use the session database %r: %s' % (path, exc)) from exc


def _sqlite_factory(path):
    """A factory of connections to the SQLite file `path`, or by default to a file
    in the private per-user directory. The path is checked now, and again
    before each new connection."""
    private = path is None
    path = os.path.abspath(os.path.join(_default_dir(), 'sessions.sqlite3')
                           if private else os.fspath(path))
    if not private:
        _check_sqlite_path(path)

    def connect():
        import sqlite3
        if private:
            _private_dir(os.path.dirname(path))
        _check_sqlite_path(path)
        if not os.path.exists(path):
            # Made whole under a temp name, WAL already on, then linked into
            # place: no other process ever sees it half made. WAL only on our
            # own database (it changes the file for every user of it); readers
            # then never wait on a writer. SQLite gives -wal and -shm its mode.
            temp = '%s.%s' % (path, secrets.token_hex(8))
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600))
            try:
                made = sqlite3.connect(temp)
                made.execute('PRAGMA journal_mode=WAL')
                made.close()
                os.link(temp, path)
            except FileExistsError:
                pass                # another process made it first: theirs
            finally:
                os.unlink(temp)
        conn = sqlite3.connect(path, timeout=30)
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

    def __init__(self, database=None, *, table='bottlesession',
                 cookie_expires=DEFAULT_MAX_AGE, paramstyle=None,
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

    def fetch(self, sid):
        def select(cur, sql):
            cur.execute(sql['select'], self._params(self.storage_key(sid), int(self.now())))
            return cur.fetchone()
        row = self._run(select)
        record = row and self.parse(row[0])
        return (row[0], record) if record else None

    def swap(self, sid, version, created, accessed, data):
        text, end = self._record(created, accessed, data)
        key = self.storage_key(sid)

        def compare_and_set(cur, sql):
            cur.execute(sql['swap'], self._params(text, end, key, version))
            if cur.rowcount == 1:
                return text, None
            cur.execute(sql['select'], self._params(key, int(self.now())))
            row = cur.fetchone()
            if row is None:
                return None
            if row[0] == text:      # ours: MySQL counts an unchanged row as 0, or a
                return text, None   # retry after a lost connection finds it written
            return row[0], self.parse(row[0])
        return self._run(compare_and_set)

    def write(self, sid, created, accessed, data, replaces=None):
        text, end = self._record(created, accessed, data)
        key = self.storage_key(sid)

        def store(cur, sql):
            if replaces:        # in the same transaction: gone meanwhile, stay gone
                cur.execute(sql['delete'], self._params(self.storage_key(replaces)))
                if cur.rowcount == 0:
                    return False
            if sql['upsert']:
                cur.execute(sql['upsert'], self._params(key, text, end))
            else:
                cur.execute(sql['update'], self._params(text, end, key))
                if cur.rowcount == 0:
                    cur.execute(sql['insert'], self._params(key, text, end))
            return True
        return self._run(store)

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

    def __init__(self, client, *, prefix='bottlesession:', cookie_expires=DEFAULT_MAX_AGE,
                 **options):
        if 'cleanup_chance' in options:
            raise TypeError('RedisSession takes no cleanup_chance: Redis drops expired '
                            'sessions itself, at their TTL')
        super().__init__(cookie_expires, cleanup_chance=0, **options)
        if not all(hasattr(client, name) for name in ('get', 'set', 'delete')):
            raise TypeError('client must be a redis-py compatible client')
        if not isinstance(prefix, str):
            raise TypeError('prefix must be a str, not %r' % (prefix,))
        self.client, self.prefix = client, prefix
        self._swap = client.register_script(self._SWAP)     # EVALSHA, loaded on demand
        # A cluster client cannot run a script over two keys, which may live on
        # different nodes: it deletes the old key, then writes the new one.
        self._atomic = not hasattr(client, 'get_nodes')
        self._rotate_script = client.register_script(self._ROTATE)

    def _call(self, work):
        try:
            return work()
        except SessionStoreError:
            raise
        except Exception as exc:    # redis-py's errors; the module is not imported
            raise SessionStoreError('session store (Redis) failed: %s' % exc) from exc

    def _name(self, sid):
        return self.prefix + self.storage_key(sid)

    # Compare and set on one key, atomic in Redis, so on a cluster too.
    _SWAP = """
        local stored = redis.call('GET', KEYS[1])
        if not stored then return 0 end
        if stored ~= ARGV[1] then return stored end
        redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
        return 1"""

    # A login's new id, only if the old one is still there (not on a cluster,
    # where the two keys may live on two nodes).
    _ROTATE = """
        if redis.call('DEL', KEYS[2]) == 0 then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        return 1"""

    def fetch(self, sid):
        text = self._call(lambda: self.client.get(self._name(sid)))
        record = text is not None and self.parse(text)
        return (text, record) if record else None

    def swap(self, sid, version, created, accessed, data):
        text, end = self._record(created, accessed, data)
        ttl = max(1, math.ceil(end - self.now()))
        found = self._call(lambda: self._swap(keys=[self._name(sid)], args=[version, text, ttl]))
        if found == 0:
            return None
        if found == 1:
            return text, None
        return found, self.parse(found)

    def write(self, sid, created, accessed, data, replaces=None):
        text, end = self._record(created, accessed, data)
        ttl = max(1, math.ceil(end - self.now()))
        key, old = self._name(sid), replaces and self._name(replaces)

        def store():
            if old and self._atomic:
                return self._rotate_script(keys=[key, old], args=[text, ttl]) == 1
            if old and not self.client.delete(old):     # a cluster: two nodes, in order
                return False
            self.client.set(key, text, ex=ttl)
            return True
        return self._call(store)

    def delete(self, sid):
        key = self._name(sid)
        self._call(lambda: self.client.delete(key))


###############################################################################
# The Bottle plugin ###########################################################
###############################################################################

class SessionPlugin:
    """Pass the session to handlers that take a `session` argument; save it if modified.

    The session is saved, and its cookie and cache headers written onto the
    response that is sent, when the handler returns (a body or an
    HTTPResponse such as static_file()) or raises an HTTPResponse such as
    bottle.redirect() or abort(); not when it fails with another exception.
    Routes without the argument are not wrapped at all.

    With csrf=True (the default) a POST, PUT, PATCH or DELETE to a route that
    takes the session must carry the token from Session.csrf_token(), as the
    form field csrf_token or the X-CSRF-Token header, or it gets a 403. A
    route can turn either off: ``@route(..., session={'autosave': False,
    'csrf': False})``.
    """

    name = 'session'
    api = 2

    def __init__(self, session_manager, keyword='session', autosave=True, csrf=True):
        if not isinstance(session_manager, BaseSession):
            raise TypeError('SessionPlugin needs a session manager, such as CookieSession()')
        self.session_manager, self.keyword, self.autosave = session_manager, keyword, autosave
        self.csrf = csrf
        if keyword != 'session':
            self.name = 'session_' + keyword    # so two can be installed, and uninstalled

    def setup(self, app):
        for other in app.plugins:
            if other is not self and getattr(other, 'keyword', None) == self.keyword:
                raise bottle.PluginError('another plugin already uses the keyword %r'
                                         % self.keyword)

    def apply(self, callback, route):
        keyword = route.config.get('session.keyword', self.keyword)
        autosave = route.config.get('session.autosave', self.autosave)
        csrf = route.config.get('session.csrf', self.csrf)
        if keyword not in _callback_args(route):
            return callback
        manager = self.session_manager

        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            session = kwargs[keyword] = manager._current(True)
            return manager._handle(session, callback, args, kwargs, autosave, csrf)
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


def _check_require(require):
    if require is not None and not callable(require):
        raise TypeError('require must be a function of the session, not %r' % (require,))


def authenticator(session_manager, login_url='/auth/login', verify=None, require=None):
    """Make `valid_user`, a decorator factory that requires a logged-in session.

    A visitor whose session is not valid is redirected to the login URL; the
    page they asked for is remembered (a same-site path only) in the
    'validuserloginredirect' cookie, for redirect_back(). session['name']
    becomes environ['REMOTE_USER'] when it is a printable string.
    `verify(session)`, if given, runs on every request; when it returns false
    the session is invalidated, e.g. because the user was deleted or changed
    their password. `require(session)`, if given, decides who may see the
    page: a signed-in user for whom it returns false gets a 403 and stays
    signed in. Use it, not `verify`, for rules such as admin-only pages.
    ``@valid_user`` works with or without parentheses. The session's headers
    go onto the response that is sent, as with the plugin.
    """
    _check_require(require)

    def valid_user(login_url=login_url, verify=verify, require=require):
        if callable(login_url):             # @valid_user, without parentheses
            return valid_user()(login_url)
        _check_require(require)

        def send_to_login(*args, **kwargs):
            target = _current_path()
            if _safe_path(target):
                bottle.response.set_cookie(
                    REDIRECT_COOKIE, target, path='/', max_age=3600,
                    httponly=True, secure=session_manager.secure, samesite='Lax')
            bottle.redirect(login_url)

        def refuse(*args, **kwargs):
            bottle.abort(403, 'You are signed in, but may not see this page.')

        def decorator(handler):
            @functools.wraps(handler)
            def check_auth(*args, **kwargs):
                session = session_manager._current(managed=True)
                if session.get('valid') and verify is not None and not verify(session):
                    session_manager.invalidate(session)
                if not session.get('valid'):
                    return session_manager._handle(session, send_to_login, args, kwargs, False)
                name = session.get('name')
                if isinstance(name, str) and name.isprintable():    # no CR/LF into headers
                    bottle.request.environ['REMOTE_USER'] = name
                if require is not None and not require(session):
                    handler_now = refuse
                else:
                    handler_now = handler
                return session_manager._handle(session, handler_now, args, kwargs, False)
            return check_auth
        return decorator
    return valid_user


def redirect_back(default='/'):
    """Redirect to the page remembered by the authenticator, if it is a safe
    same-site path, else to `default`. Call it at the end of a login handler."""
    target = (_cookie_values(bottle.request.environ, REDIRECT_COOKIE) or [None])[0]
    bottle.response.delete_cookie(REDIRECT_COOKIE, path='/')
    bottle.redirect(target if _safe_path(target) else default)


###############################################################################
# Passwords ###################################################################
###############################################################################

# scrypt's cost as (log2 N, r, p): OWASP's minimum, 128 MiB and a few tenths
# of a second per hash. Raise it, and needs_rehash() says which hashes to redo.
SCRYPT_PARAMETERS = (17, 8, 1)
_HASH_RE = re.compile(r'scrypt\$([1-9][0-9]?)\$([1-9][0-9]{0,2})\$([1-9][0-9]{0,2})'
                      r'\$([A-Za-z0-9_-]{22,86})\$([A-Za-z0-9_-]{22,86})\Z')


def _scrypt_cost(log_n, r, p):
    """The memory (bytes, as OpenSSL counts it) and work (N*r*p) of scrypt."""
    n = 1 << log_n
    return 128 * r * (n + p + 2), n * r * p


def _password_bytes(password):
    if isinstance(password, str):       # 'surrogatepass': a lone surrogate from JSON
        return password.encode('utf-8', 'surrogatepass')
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    raise TypeError('a password is a str or bytes, not %s' % type(password).__name__)


def _scrypt(password, salt, log_n, r, p, length):
    memory, _ = _scrypt_cost(log_n, r, p)
    return hashlib.scrypt(_password_bytes(password), salt=salt, n=1 << log_n, r=r, p=p,
                          maxmem=memory + 65536, dklen=length)


def _parse_hash(hashed):
    """(log_n, r, p, salt, key) from a hash_password() string, or None.

    A stored hash is trusted no further than twice the current memory and
    eight times the current work, so that one planted in a user table cannot
    make check_password() allocate gigabytes or run for minutes."""
    match = _HASH_RE.match(hashed) if isinstance(hashed, str) else None
    if match is None:
        return None
    log_n, r, p = (int(group) for group in match.groups()[:3])
    memory, work = _scrypt_cost(log_n, r, p)
    most_memory, most_work = _scrypt_cost(*SCRYPT_PARAMETERS)
    if memory > 2 * most_memory or work > 8 * most_work:
        return None
    try:
        salt, key = _b64decode(match.group(4).encode()), _b64decode(match.group(5).encode())
    except binascii.Error:
        return None
    return log_n, r, p, salt, key


def hash_password(password):
    """Hash a password (str or bytes; a str is UTF-8 encoded) for storage.

    Uses scrypt (OWASP's minimum: N=2**17, r=8, p=1) with a random 16-byte
    salt, and returns a str that carries its parameters::

        scrypt$<log2 N>$<r>$<p>$<salt>$<hash>
        e.g. scrypt$17$8$1$<22 characters>$<43 characters>

    where salt (16 bytes) and hash (32 bytes) are base64url without padding.
    It takes 128 MiB and a few tenths of a second on purpose: that is what
    makes a stolen table slow to crack. check_password() costs the same, so
    rate-limit login attempts.
    """
    log_n, r, p = SCRYPT_PARAMETERS
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, log_n, r, p, 32)
    return 'scrypt$%d$%d$%d$%s$%s' % (log_n, r, p, _b64encode(salt).decode(),
                                      _b64encode(key).decode())


def check_password(password, hashed):
    """True if `password` matches `hashed`, a hash_password() string.

    The comparison is constant-time. It returns False, and never raises, for
    a wrong password, a password that is not a str or bytes, and a hash that
    is malformed, foreign (not made by hash_password) or asks for absurd
    parameters. To avoid telling who has an account by timing, check a
    missing user's password against a hash_password() of anything.
    """
    parsed = _parse_hash(hashed)
    if parsed is None:
        return False
    log_n, r, p, salt, key = parsed
    try:
        derived = _scrypt(password, salt, log_n, r, p, len(key))
    except (TypeError, ValueError):     # not a str or bytes; OpenSSL refused
        return False
    return hmac.compare_digest(derived, key)


def needs_rehash(hashed):
    """True when `hashed` is weaker than hash_password() makes today, or not
    one of its hashes at all. Store a new hash_password() at the next
    successful check_password()."""
    parsed = _parse_hash(hashed)
    if parsed is None:
        return True
    log_n, r, p, salt, key = parsed
    current = SCRYPT_PARAMETERS
    return (log_n < current[0] or r < current[1] or p < current[2]
            or len(salt) < 16 or len(key) < 32)
