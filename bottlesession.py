"""bottlesession: sessions and logins for the Bottle web framework, in one file.

Copy this file next to bottle.py (it needs only the standard library and
bottle), or ``pip install bottlesession``::

    import os, bottle, bottlesession as bs

    app = bottle.Bottle()
    manager = bs.CookieSession(secret=os.environ['SESSION_SECRET'])
    app.install(bs.SessionPlugin(manager, load_user=USERS.get))
    valid_user = bs.authenticator(manager, login_url='/login')

    @app.route('/')
    @valid_user
    def index(session, user):           # the plugin passes both in
        session['visits'] = session.get('visits', 0) + 1    # and saves it
        return 'Hello %s, visit %d' % (user['name'], session['visits'])

A login handler calls ``session.login(user_id)``; a logout, ``session.logout()``.

The sections, top to bottom:

1. Errors: one hierarchy, rooted in SessionError; the base64 and JSON helpers.
2. The session object: a dict that tracks its changes; flash messages.
3. The request cycle: BaseSession loads a session once per request; the plugin commits it.
4. Logins and CSRF: login(), logout(), the current user, the CSRF checks.
5. The plugin and the authenticator.
6. The stores: private directories, secrets, CookieSession and its signer;
   ServerSession (the store interface, the merge); PickleSession, SQLSession, RedisSession.
7. Passwords: scrypt.

The CookieSession wire format, after Django's signing.py::

    value     = payload "." timestamp "." signature
    payload   = base64url(json)              or "." base64url(zlib(json))
    json      = {"c": created, "d": {...data...}, "i": id, ...}   (Session.meta)
    timestamp = decimal seconds since the epoch when the cookie was signed
    signature = base64url(HMAC-SHA256(key, context payload "." timestamp))
    context   = cookie_name "\\0" path "\\0" domain "\\0"      (domain "" if unset;
                [namespace "\\0"] follows when namespace= is given)
    key       = HMAC-SHA256(secret, "bottlesession.cookie-session")

base64url is RFC 4648 without padding, so the value needs no quoting. For
example, with secret "0123456789abcdef", cookie_name "session_data", path
"/", no domain, id "A" * 43, created and signed at 1700000000, no data::

    session_data=eyJjIjoxNzAwMDAwMDAwLCJkIjp7InZhbGlkIjpmYWxzZX0sImkiOiJBQUFB
    QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBIn0.1700000000.
    yhBl_yymHjoziNl-jz3MjWAnNEBsMBNivuc495UgdyQ                 (one line)

Caveats. A signed cookie is not encrypted: the client can read it. A copy of it can be
replayed until it expires, unless the app gives user_version= to the plugin (then a password
change ends it). Browsers drop cookies over about 4 KB; CookieSession raises SessionTooLarge
rather than let that log the user out in silence.
"""

__author__ = 'The bottlesession authors'
__version__ = '3.0.0'
__license__ = 'MIT'

# Copyright (c) 2026 The bottlesession authors. The API it keeps working was designed by Sean
# Reifschneider for the original bottlesession (2011). License: MIT (see LICENSE for details)

__all__ = ['SessionError', 'BadSession', 'BadSignature', 'SessionTooLarge', 'SessionStoreError',
           'ConfigError', 'InsecureSecretWarning', 'Session', 'BaseSession', 'current_user',
           'SessionPlugin', 'Plugin', 'authenticator', 'redirect_back', 'derive_key',
           'machine_secret', 'Signer', 'CookieSession', 'ServerSession', 'PickleSession',
           'SQLSession', 'RedisSession', 'hash_password', 'check_password', 'needs_rehash',
           'SCRYPT_PARAMETERS']

import binascii, collections, contextlib, datetime, functools, hashlib, hmac, inspect, itertools
import io, json, logging, math, os, pickle, random, re, secrets, stat, sys, tempfile
import threading, time, traceback, urllib.parse, warnings, weakref, zlib

try:
    import fcntl        # POSIX: the file store's locks
except ImportError:
    fcntl = None

import bottle

_log = logging.getLogger('bottlesession')
DEFAULT_MAX_AGE = 30 * 24 * 3600     # the original's cookie_expires: 30 days
MAX_LIFETIME = 400 * 24 * 3600       # browsers cap cookie lifetimes here (RFC 6265bis)
COOKIE_LIMIT = 4093                  # bytes of name=value browsers keep for sure
SECRET_BYTES = 32                    # session ids, CSRF secrets: 256 random bits
ID_LENGTH = 43                       # SECRET_BYTES in base64url
TOKEN_LENGTH = 86                    # a CSRF token: a mask and the masked secret
REDIRECT_COOKIE = 'validuserloginredirect'
_MAX_CANDIDATES = 8                  # cookies of one name we try per request
_SAFE_METHODS = frozenset(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
_CDN_HEADERS = ('-Cache-Control', 'Surrogate-Control', 'Edge-Control', 'X-Accel-Expires')  # ends
_SCALARS = (str, int, float, bool, type(None), bytes)   # a Session compares these on set
_MISSING = object()
_LIMITS_LOCK = threading.Lock()      # the cookie stores' rate limits, counted per process

_ID_RE = re.compile(r'[A-Za-z0-9_-]{%d}\Z' % ID_LENGTH)
_SIGNED_RE = re.compile(r'[A-Za-z0-9_.-]+\Z')          # what a signed cookie is made of
_KEY_RE = re.compile(r'[0-9a-f]{64}\Z')                  # a stored session's key: SHA-256
_UUID4_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z')
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 6265 cookie name
_ATTR_RE = re.compile(r'[\x21-\x3a\x3c-\x7e]+\Z')         # printable, no ';'
_SAFE_PATH_RE = re.compile(r'/(?![/\\])[\x21-\x5b\x5d-\x7e]*\Z')  # no '\\'
_DOT_SEGMENT_RE = re.compile(r'/(?:\.|%2e){1,2}(?:[/?#]|\Z)', re.I)  # a browser drops them
_COOKIE_ESCAPE_RE = re.compile(r'\\(?:([0-3][0-7][0-7])|(.))')      # RFC 6265 quoting


###############################################################################
# 1. Errors ###################################################################
###############################################################################

class SessionError(Exception):
    """The base of every error this module raises."""


class BadSession(SessionError):
    """An untrusted session cookie or id. Never reaches the app: the request gets a fresh one."""


class BadSignature(BadSession):
    """The signature does not match the payload under any key."""


class SessionTooLarge(SessionError, ValueError):
    """Too large to store: over 4 KB as a cookie (browsers drop it in silence), or max_size."""

    def __init__(self, size, limit):
        super().__init__('the session would be %d bytes, over the limit of %d. Keep '
                         'less in the session, or use a server-side store.' % (size, limit))
        self.size, self.limit = size, limit


class SessionStoreError(SessionError, bottle.HTTPError):
    """The store failed or cannot be reached: a bottle.HTTPError, a 503 whose page names
    no internals. str(error) is the driver's message, logged to the 'bottlesession' logger."""

    def __init__(self, message):
        super().__init__(503, 'The session store is unavailable. Please try again in a moment.')
        self.args = (message,)
        _log.error('%s', message)


class ConfigError(SessionError, ValueError):
    """The session manager was configured wrongly. Raised at construction."""


class InsecureSecretWarning(UserWarning):
    """The signing secret is weak: short, or derived from the machine."""


def _new_id():
    return secrets.token_urlsafe(SECRET_BYTES)


def _digest(name):
    """SHA-256 of a JSON value: a name of any length, kept as 32 bytes."""
    return hashlib.sha256(_json_encode(name).encode('utf-8')).digest()


def _xor(a, b):
    """Two byte strings of one length, XORed: masks for CSRF secrets."""
    return (int.from_bytes(a, 'big') ^ int.from_bytes(b, 'big')).to_bytes(len(a), 'big')


def _seconds(value, name):
    """A lifetime in seconds: positive, finite and at most MAX_LIFETIME."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError('%s must be a number of seconds or a timedelta, not %r' % (name, value))
    if not 0 < value <= MAX_LIFETIME:     # also refuses nan, inf and 10**400
        raise ConfigError('%s must be more than 0 and at most 400 days (%d s), not %r'
                          % (name, MAX_LIFETIME, value))
    return value


# Compact JSON on json's C scanner and encoder, not dumps(): a tenth of a request. The encoder
# is made once, with no loop check (threads would share its marks): a loop is a RecursionError.
_json_default = json.JSONEncoder().default      # raises the TypeError json raises
_json_decoder = json.JSONDecoder()
_NOT_JSON = (TypeError, ValueError, RecursionError)    # data JSON cannot hold; nested too deep
_json_encoder = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _json_default, json.encoder.encode_basestring_ascii, None, ':', ',', False, False, False)


def _json_encode(data):
    if _json_encoder is None:                   # no C accelerator: not CPython
        return json.dumps(data, separators=(',', ':'), allow_nan=False)
    return ''.join(_json_encoder(data, 0))


def _json_decode(text):
    data, end = _json_decoder.raw_decode(text)
    if end != len(text):
        raise ValueError('extra data after JSON')
    return data
# base64url, unpadded, on binascii: base64's wrappers cost more than coding a cookie does.
_TO_URLSAFE = bytes.maketrans(b'+/', b'-_')
_FROM_URLSAFE = bytes.maketrans(b'-_', b'+/')


def _b64encode(raw):
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b'=')


def _b64decode(data):
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b'==')


def _to_json(data):
    """Serialize a record, or raise a TypeError that names the bad session key."""
    try:
        return _json_encode(data)
    except _NOT_JSON as exc:
        for key, value in data.get('d', {}).items():
            try:
                json.dumps(value, allow_nan=False)
            except _NOT_JSON as why:        # a NaN in a dict, say
                raise TypeError('session[%r] cannot be stored as JSON: %s' % (key, why)) from exc
        raise TypeError('session data cannot be stored as JSON: %s' % exc) from exc


###############################################################################
# 2. The session object #######################################################
###############################################################################

class Session(dict):
    """The session: a dict that knows its id and whether it was modified.

    A change inside a value (``session['cart'].append(x)``) is not seen: set ``session.modified
    = True``. Keys 'sessionid' (never stored) and 'valid' are there from the start, as in the
    original. `meta`, stored beside the data: c the start of its lifetime (creation or last
    login), a its last use, e the end set_expiry() chose (0: a browser-session cookie), u the
    user's id, l the login time, h the user_version hash, x the CSRF secret, k (server stores)
    the key of this app's index of the user's sessions. `loaded`: (the stored version, i.e. the
    blob, or None; meta; (valid, name)) as this request loaded them."""

    __slots__ = ('manager', 'id', 'meta', 'loaded', 'old_id', 'modified', 'cookies', 'wrapped')

    def __init__(self, manager, sid, data=(), meta=None, version=None):
        dict.__init__(self, data)
        dict.__setitem__(self, 'sessionid', sid)
        dict.setdefault(self, 'valid', False)
        self.manager, self.id, self.meta = manager, sid, meta
        self.loaded = version, dict(meta), (bool(self['valid']), self.get('name'))
        self.old_id, self.modified = None, False    # old_id: the stored id a login replaces
        self.cookies, self.wrapped = {}, False  # Set-Cookie headers to send; held: see _handle

    new = property(lambda self: self.loaded[0] is None, doc='Whether it is not stored yet.')
    created = property(lambda self: self.meta['c'], doc='The start of its lifetime.')
    accessed = property(lambda self: self.meta['a'], doc='Its last use.')
    login_time = property(lambda self: self.meta.get('l') if self.get('valid') else None,
                          doc='When the user signed in (epoch seconds), or None.')
    user_id = property(lambda self: self.meta.get('u') if self.get('valid') else None,
                       doc='The id given to login(), or None, as the session says: whether the '
                           'user still exists and is signed in, ask current_user() or valid_user.')

    def login(self, user_id, user=None):
        """Sign `user_id` in: a new id and CSRF secret, saved with the session. Give the
        `user` whose password was checked: a user_version changed since then ends it."""
        _login(self, user_id, user)

    def save(self):
        """Save now. The plugin does this for you when the session was modified."""
        self.manager.save(self)

    def regenerate(self):
        """Give the session a new id and CSRF secret, keep its data; save it."""
        self.manager.regenerate(self)

    def invalidate(self):
        """Sign out: delete the session and expire its cookie; this becomes a fresh one."""
        self.manager.invalidate(self)

    logout = invalidate

    def set_expiry(self, value):
        """End it `value` seconds (or a timedelta, at most 400 days) from now; 0: a browser-
        session cookie (ended at cookie_expires); None: the default. Kept across login."""
        if value is None:
            self.meta.pop('e', None)
        elif value == 0 and not isinstance(value, bool):
            self.meta['e'] = 0
        else:
            self.meta['e'] = int(self.manager.now() + _seconds(value, 'expiry'))
        self.modified = True

    def csrf_token(self):
        """A token for a form field named csrf_token, or an X-CSRF-Token header: a new
        string each call (against BREACH), each valid until a login or logout."""
        return _csrf_token(self)

    def csrf_field(self):
        """csrf_token() in a hidden form field: every form that posts carries one."""
        return '<input type="hidden" name="csrf_token" value="%s">' % self.csrf_token()

    def check_csrf(self):
        """Abort with 403 unless the CSRF checks pass; the plugin runs them on unsafe methods."""
        _check_csrf(self, getattr(_plugin(self.manager, here=True), 'trusted_origins', ()))

    def __setitem__(self, key, value):
        if key == 'valid' and not value:
            self._sign_out()
        old = dict.get(self, key, _MISSING)
        if type(old) is not type(value) or type(value) not in _SCALARS or old != value:
            self.modified = True
        dict.__setitem__(self, key, value)

    def _sign_out(self):
        """Sign out: no user or end, only flashes; l False, not a time, makes a sign-in a login."""
        if dict.get(self, 'valid'):
            self.meta.update(l=False, u=None)
            self.meta.pop('e', None)
            bottle.request.environ.pop(self.manager._environ_key + '.user', None)
            self._refill({k: v for k, v in self.items() if k in ('valid', self.flash_key)})

    __ior__ = lambda self, other: self.update(other) or self     # |=, through update()

    def clear(self):
        """Remove all data. The id stays, and the session is no longer signed in."""
        self._sign_out()
        self._refill({'valid': False})
        self.modified = True

    def _refill(self, data):
        """Replace all data with `data`, unchanged; the id stays."""
        dict.clear(self)
        dict.update(self, data, sessionid=self.id)

    def pop(self, key, *default):
        if key in self:
            self.modified = True
            if key == 'valid':
                self._sign_out()
        return dict.pop(self, key, *default)

    __delitem__ = pop       # del session[key]: a KeyError if missing, as a dict's

    def popitem(self):
        for key in reversed(self):      # the data's last item: the id, held last, is not data
            if key != 'sessionid':
                return key, self.pop(key)
        raise KeyError('popitem(): the session holds no data')

    def setdefault(self, key, default=None):
        key in self or self.__setitem__(key, default)      # the change is seen
        return dict.__getitem__(self, key)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __repr__(self):
        return '<Session %s… %r>' % (self.id[:6], {k: self[k] for k in self if k != 'sessionid'})

    # Flash messages, with Flask's names ######################################
    flash_key = '_flashes'      # their one key: a JSON list of [category, message]
    flash_limit = 20            # unread messages kept; the oldest go first
    flash_bytes = 1024          # and their JSON at most: a cookie holds 4 KB

    def flash(self, message, category='message'):
        """Queue a JSON-serialisable message for a later page. Past flash_limit unread
        messages or flash_bytes, the oldest go; a longer str message is cut short."""
        category = category[:32] if isinstance(category, str) else category     # a name
        if isinstance(message, str):
            cut = message[:self.flash_bytes // 4]
            while cut and len(_json_encode([category, cut])) > self.flash_bytes - 8:  # and '…'
                cut = cut[:len(cut) * 7 // 8]       # an emoji is 12 bytes of JSON
            message = cut + '…' if len(cut) < len(message) else message
        queue = self.get(self.flash_key, []) + [[category, message]]
        while len(queue) > self.flash_limit or (
                len(queue) > 1 and len(_json_encode(queue)) > self.flash_bytes):
            del queue[0]
        self[self.flash_key] = queue

    def get_flashed_messages(self, with_categories=False, category_filter=()):
        """Remove and return the queued messages (of category_filter's categories, if
        given), as (category, message) with with_categories=True. Unlike Flask's, once."""
        queued = self.get(self.flash_key) or []
        shown = [m for m in queued if not category_filter or m[0] in category_filter]
        if shown:
            kept = [m for m in queued if category_filter and m[0] not in category_filter]
            del self[self.flash_key]
            if kept:
                self[self.flash_key] = kept
        return [tuple(m) for m in shown] if with_categories else [m[1] for m in shown]


###############################################################################
# 3. The request cycle ########################################################
###############################################################################

def _cookie_values(environ, name):
    """The values of cookie `name` in the request, in order, unquoted, up to nine: a ninth
    says there were over eight. Not SimpleCookie: slow, it drops a header for one odd cookie."""
    header = environ.get('HTTP_COOKIE')
    if not header or name not in header:
        return ()
    found = []
    for part in header.split(';'):
        key, eq, value = part.partition('=')
        if eq and key.strip(' \t') == name and len(found) <= _MAX_CANDIDATES:
            value = value.strip(' \t')      # blanks only: '\xa0__Host-s' is another name
            if len(value) > 1 and value[0] == value[-1] == '"':     # RFC 6265 quoting
                value = _COOKIE_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)) if m.group(1)
                                              else m.group(2), value[1:-1])
            found.append(value)
    return found


def _apply_headers(response, cookies, cache='private'):
    """Write a session's headers onto the response to be sent: Vary: Cookie, X-Frame-Options:
    SAMEORIGIN and Cache-Control: `cache` unless the app set its own, and `cookies` ({name:
    Set-Cookie header}), which make it never publicly cacheable (no-store if one ends one)."""
    # bottle's header dict (name: values), directly: its accessors cost more than a session read.
    headers = response._headers
    vary = headers.setdefault('Vary', ['Cookie'])
    if vary[-1] != 'Cookie' and 'cookie' not in [
            v.strip().lower() for v in ','.join(vary).split(',')]:
        vary[-1] += ', Cookie'
    headers.setdefault('X-Frame-Options', ['SAMEORIGIN'])   # a framed page's click passes CSRF
    control = headers.setdefault('Cache-Control', [cache])
    if cache != 'private' and control == ['private']:   # a save() in the page wrote it
        control[:] = [cache]
    if not cookies and cache == 'private':     # else a signed-in page: no cache keeps it
        return
    for name in [n for n in headers if n.endswith(_CDN_HEADERS)]:
        del headers[name]       # CDNs obey these first: CDN-, a vendor's (RFC 9213), others
    if '=; Max-Age=0;' in ''.join(cookies.values()):
        control[:] = ['no-store']       # it ends a session: not even the browser keeps it
    elif control != ['private'] and control != ['no-store']:   # a cache may obey any of them
        kept = [d.strip() for d in ','.join(control).split(',') if d.strip() and
                d.split('=')[0].strip().lower() not in ('public', 'private', 's-maxage')]
        control[:] = [', '.join(['private'] + kept)]
    sent = headers.get('Set-Cookie')
    if sent:    # each replaces one of its name, Path and Domain: the browser keeps one
        ours = {_cookie_key(header) for header in cookies.values()}
        sent = [header for header in sent if _cookie_key(header) not in ours]
    headers['Set-Cookie'] = (sent or []) + list(cookies.values())


def _cookie_key(header):
    """What a browser tells the cookie of a Set-Cookie header by: name, Path, Domain."""
    name, _, rest = header.partition('=')
    attributes = (a.partition('=') for a in rest.split(';')[1:])      # names in any case
    return name.strip(), frozenset((k.strip().lower(), v.strip()) for k, _, v in attributes
                                   if k.strip().lower() in ('path', 'domain'))


def _record(session):
    """What a store keeps: the meta (times in whole seconds) and, under 'd', the data, no id."""
    record = dict(meta := session.meta, c=int(meta['c']), a=int(meta['a']), d=dict(session))
    if 'l' in record:
        record['l'] = int(record['l'])
    record['d'].pop('sessionid', None)      # the app may have popped it
    return record


class BaseSession:
    """What every store shares: the options, expiry and the request cycle.

    :param cookie_expires: the maximum age (seconds or a timedelta, at most 400 days) from creation
        or the last login; None: a browser-session cookie, which the server ends after 30 days.
    :param idle_timeout: end a session not used for this long.
    :param namespace: a name for this app, so apps that share a store and cookie name do not
        share sessions; on the per-user defaults, its file."""
    _users = None       # the SessionPlugin whose load_user and user_version its sessions obey

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
        prefix = cookie_name.lower().partition('-')[0]      # RFC 6265bis: __Host-, __Secure-
        if prefix in ('__secure', '__host') and not secure or prefix == '__host' and (
                domain or path != '/'):
            raise ConfigError('cookie_name %r needs secure=True%s: browsers drop it otherwise'
                              % (cookie_name, ', path "/" and no domain' * (prefix == '__host')))
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError('namespace must be a str, not %r' % (namespace,))
        self.cookie_name, self.path, self.domain = cookie_name, path, domain
        self.namespace = namespace or None      # '' is no namespace, in every store
        self.secure, self.httponly, self.samesite = bool(secure), bool(httponly), samesite
        self._attrs = ''.join(['; Path=' + path, '; Domain=' + domain if domain else '',
                               '; Secure' if secure else '', '; HttpOnly' if httponly else '',
                               '; SameSite=' + samesite if samesite else ''])
        self._environ_key, self._held = ('bottlesession.%x' % id(self) + s for s in ('', '.held'))
        self.visitor_cookie, self.flash_cookie = cookie_name + '_csrf', cookie_name + '_flash'
        self._touch_after = self.idle_timeout and self.idle_timeout / 10   # reads rarely write

    def now(self):
        """The time in seconds. Every expiry decision reads the clock here."""
        return time.time()

    def expires_at(self, meta):
        """The one expiry rule: the set_expiry() end, else max_age after creation or the
        last login; or idle_timeout after the last use, if sooner."""
        chosen = meta.get('e')
        end = chosen if type(chosen) in (int, float) and chosen > 0 else meta['c'] + self.max_age
        return end if self.idle_timeout is None else min(end, meta['a'] + self.idle_timeout)

    def _max_age(self, meta, now):
        """The cookie's Max-Age: None for a browser-session cookie. An end
        set_expiry() chose is absolute: idle time is the server's business."""
        end = meta.get('e')
        if end is None and self.cookie_expires is not None:
            end = meta['c'] + self.max_age
        return max(0, math.ceil(end - now)) if end else None

    def _set_cookie(self, session, name, value, max_age):
        """The one place a Set-Cookie header is built, and queued for the
        commit: max_age None for a browser-session cookie, 0 to expire it."""
        if max_age == 0:
            value = '; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT'   # no value, and expired
        elif max_age is not None:
            value += '; Max-Age=%d' % max_age
        session.cookies[name] = '%s=%s%s' % (name, value, self._attrs)

    # The store's part ########################################################
    def load(self, value):
        """Return the Session for a cookie value, or raise BadSession."""
        raise NotImplementedError

    def persist(self, session):
        """Store the session. Return (its new version, the cookie value to send
        or None), or (None, None) if it was deleted or damaged meanwhile, or is not stored."""
        raise NotImplementedError

    def delete(self, sid):
        """Delete the stored session `sid`, if there is one."""
        raise NotImplementedError

    cleanup = lambda self: 0    # delete expired sessions, for cron; return how many

    # Loading #################################################################
    def get_session(self):
        """The request's session; a bad or expired cookie gives a fresh one."""
        session = self._current()
        if not session.wrapped and (session.old_id or self._refresh_due(session)):
            self.save(session)      # no plugin or valid_user will commit it
        _apply_headers(bottle.response, {} if session.wrapped else session.cookies)  # the commit's
        return session

    def _current(self, wrapped=False, environ=None):
        environ = bottle.request.environ if environ is None else environ
        session = environ.get(self._environ_key)
        if session is None:
            session = environ[self._environ_key] = self._load(environ)
        session.wrapped |= wrapped or environ.get(self._held, False)  # _handle's
        return session

    def _load(self, environ):
        now = self.now()
        for value in _cookie_values(environ, self.cookie_name)[:_MAX_CANDIDATES]:
            try:
                session = self.load(value)
            except BadSession:
                continue
            if now <= self.expires_at(session.meta):
                return session
            with contextlib.suppress(SessionStoreError):    # expired: gone on the server
                self.delete(session.id)     # too, or at a cleanup if the store is failing
        return self._fresh(environ, now)

    _fresh = lambda self, environ, now: Session(self, _new_id(), meta={'c': now, 'a': now})

    _refresh_due = lambda self, session: (self._touch_after and not session.new
                                          and self.now() - session.meta['a'] > self._touch_after)

    # Committing ##############################################################
    def _handle(self, environ, handler, args, kwargs, autosave, cache='private'):
        """Run a handler, holding the session (see _current), then commit it onto the response
        Bottle sends (a returned or raised HTTPResponse, else bottle.response); a crash: none."""
        outer = environ.get(self._held)    # a _handle around this one's
        raised, response, environ[self._held] = None, bottle.response, True
        try:
            try:
                result = handler(*args, **kwargs)
            except bottle.HTTPResponse as exc:      # committed as if returned, raised after
                result = raised = exc
            session = environ.get(self._environ_key)
            environ[self._held] = session is not None or bool(outer)
            if session is not None:
                response = result if isinstance(result, bottle.HTTPResponse) else response
                if not (isinstance(response, SessionStoreError)     # a 503, or a crash
                        or hasattr(response, 'session_crash')):      # below: no save
                    self._commit(session, autosave)
                    session.wrapped = environ[self._held] = bool(outer)  # let go
                _apply_headers(response, session.cookies, cache)
        except Exception as exc:    # the handler crashed, or the commit failed. Bottle's own
            session = environ.get(self._environ_key)    # 500 would drop the cookies: a logout's,
            sent = response._headers.get('Set-Cookie', [])      # or a login a store below saved
            if not (session is not None and self.cookie_name in session.cookies or sent):
                raise                       # as raised: a plugin or middleware above sees it
            error = exc
            if not isinstance(exc, SessionStoreError):      # a 503 stays one
                trace = traceback.format_exc()
                environ['wsgi.errors'].write(trace)
                error = bottle.HTTPError(500, 'Internal Server Error', exc, trace)
                error.session_crash = True
            error._headers['Set-Cookie'] = list(sent)
            _apply_headers(error, session.cookies if session is not None else {}, cache)
            raise error from (exc if error is not exc else None)
        if raised is not None:
            raise raised
        return result

    def _commit(self, session, autosave):
        """Save it if due (a login, logout, new CSRF secret even without autosave)."""
        _notice_login(session)
        meta, loaded = session.meta, session.loaded[1]
        if session.modified and (autosave or meta.get('l') != loaded.get('l') or session.old_id
                                 or meta.get('x') != loaded.get('x') and not session.new):
            self._save(session)
        elif not session.modified and self._refresh_due(session):     # not autosave's to save
            try:
                self._save(session)
            except SessionStoreError as exc:     # the page only read the session: serve it
                _log.warning('could not refresh the idle clock of a session: %s', exc)

    def save(self, session):
        """Store the session and send its cookie; a plain dict (the original API) is the data."""
        if not isinstance(session, Session):
            if not isinstance(session, dict):
                raise TypeError('save() takes the session that get_session() returned')
            data, session = {'valid': False, **session}, self._current()
            session._refill(dict(data, valid=session.get('valid')))
            session['valid'] = data['valid']        # a sign-out drops the data, as anywhere
        elif session.manager is not self:
            raise TypeError('save() takes a session of this manager')
        _notice_login(session)      # a login or logout made by setting session['valid']
        self._save(session)
        _apply_headers(bottle.response, session.cookies)

    def _save(self, session):
        if session.new:
            _csrf_secret(session, False)    # a visitor's secret goes along: open forms work
        now = session.meta['a'] = self.now()
        version, value = self.persist(session)
        if value is not None:
            self._set_cookie(session, self.cookie_name, value, self._max_age(session.meta, now))
        if version is not None:
            session.loaded = (version, dict(session.meta),
                              (bool(session.get('valid')), session.get('name')))
        session.old_id, session.modified = None, False

    regenerate = lambda self, session: _rotate(session) or self.save(session)  # new id, secret

    def invalidate(self, session):
        for sid in filter(None, (session.old_id, None if session.new else session.id)):
            self.delete(sid)
        now, cookies, wrapped = self.now(), session.cookies, session.wrapped
        dict.clear(session)
        Session.__init__(session, self, _new_id(), meta={'c': now, 'a': now})
        session.meta['x'] = _new_id()       # a new secret: the visitor cookie dies too
        session.cookies, session.wrapped = cookies, wrapped
        bottle.request.environ.pop(self._environ_key + '.user', None)
        self._set_cookie(session, self.cookie_name, '', 0)
        for name in (self.visitor_cookie, self.flash_cookie):   # a visitor's secret, flashes
            if name in cookies or _cookie_values(bottle.request.environ, name):
                self._set_cookie(session, name, '', 0)
        _apply_headers(bottle.response, session.cookies)


###############################################################################
# 4. Logins and CSRF ##########################################################
###############################################################################
# _login() and _notice_login() write a login in session.meta (u, l, h); Session._sign_out()
# clears it (l False), invalidate() starts afresh. A login or sign-out starts a new CSRF secret (x)
# and, if stored, a new id (fixation). An unsafe request passes, before its handler runs, a
# trusted Origin, else Sec-Fetch-Site, else its Origin, else the CSRF token: the secret masked
# with new random bytes in every response (BREACH). A visitor with nothing stored keeps the
# secret in a signed cookie.

def _rotate(session):
    """A new CSRF secret (a visitor's cookie of the old one ends) and, if stored, a new id."""
    if not session.new and session.old_id is None:
        session.old_id, session.id = session.id, _new_id()
        dict.__setitem__(session, 'sessionid', session.id)
    session.meta['x'] = _new_id()
    session.modified, name = True, session.manager.visitor_cookie
    if name in session.cookies or _cookie_values(bottle.request.environ, name):  # stored or
        session.manager._set_cookie(session, name, '', 0)   # not: it holds the old secret


def _user_id(user_id):
    """A user id as stores index it: login(42) and end_sessions('42') are one user."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError('user_id must be a str or an int, not %r' % (user_id,))
    return str(user_id)


def _login(session, user_id, user=None):
    user_id is None or _user_id(user_id)
    previous = session.user_id
    if previous is None and user_id is not None and session.get('valid'):
        previous = session.get('name', '')      # signed in the original way: a name
    if previous is not None and str(previous) != str(user_id):
        session._refill({})                         # another user's data goes,
        session.meta.pop('e', None)                 # and their remember-me
    _rotate(session)
    now = session.manager.now()
    session.meta.update(c=now, l=now, u=user_id)
    session.meta.pop('h', None)
    dict.__setitem__(session, 'valid', True)
    environ = bottle.request.environ
    environ.pop(session.manager._environ_key + '.user', None)
    plugin = _plugin(session.manager)
    if plugin is not None and plugin.user_version is not None and user_id is not None:
        if user is None:        # whatever it is now: give the user that was checked
            user = plugin.load_user(user_id)
        environ[session.manager._environ_key + '.user'] = user
        if user is not None:
            session.meta['h'] = _version_hash(session, user_id, plugin.user_version(user))


def _notice_login(session):
    """See a login or logout made the original way, by setting 'valid' (or a
    new 'name'), and make it a real one. Runs before a save and a token."""
    (_, loaded, was), since = session.loaded, session.meta.get('l')
    state = bool(session.get('valid')), session.get('name')
    if (since is not None and since is not False and since != loaded.get('l')    # a time
            or state == was and since == loaded.get('l')):
        return                          # login() ran and did it all, or nothing changed
    if not state[0]:                    # a visitor's new name is data; a sign-out (after
        if 'u' in session.meta:         # login() too) is seen once: _sign_out() set u None
            _rotate(session)
            for key in ('u', 'l', 'h'):
                session.meta.pop(key, None)
    elif not was[0] or session.meta.get('u') is None:
        # A login (a sign-out left no user id), or another user's: 'name' names no user id.
        # A session that login() signed in keeps its user whatever is written to 'name'.
        _login(session, None)


def _version_hash(session, user_id, version, key=None):
    """The keyed hash of user_version(user) a login keeps; never the string.
    The newest secret makes it; any of the store's secrets verifies it."""
    message = _json_encode([user_id, str(version)]).encode('utf-8')
    return hmac.new(key or session.manager._user_version_keys[0], message,
                    hashlib.sha256).hexdigest()


def _plugin(manager=None, here=False):
    """`here`: the SessionPlugin (of `manager`, if given) of the route's own app, or None. Else
    the one knowing the users (load_user) of `manager`, or of the first manager here with one."""
    if manager is not None and not here:
        return manager._users       # every route's, a bare sub-app's too
    app, route = bottle.request.app, bottle.request.environ.get('bottle.route')
    # A route of this app's (merged: another's), else the app's: a sub-app's 404 page, say
    plugins = route.app.plugins + route.plugins if route in app.routes else app.plugins
    found = (p if here else p.session_manager._users for p in plugins
             if isinstance(p, SessionPlugin) and manager in (None, p.session_manager))
    return next(filter(None, found), None)


def current_user():
    """The signed-in user, as the plugin's load_user gives it, or None; loaded once
    per request. A user it no longer finds, or whose user_version changed, is signed out."""
    if (plugin := _plugin()) is None:
        raise ConfigError('current_user() needs SessionPlugin(manager, load_user=...) '
                          'installed on the app serving this request')
    return _user(plugin, plugin.session_manager.get_session())


def _user(plugin, session):
    environ, key = bottle.request.environ, session.manager._environ_key + '.user'
    if key in environ:
        return environ[key]
    user = None if (user_id := session.user_id) is None else plugin.load_user(user_id)
    if user is not None and plugin.user_version is not None:
        version = plugin.user_version(user)
        if not any(hmac.compare_digest(str(session.meta.get('h')),
                                       _version_hash(session, user_id, version, secret))
                   for secret in session.manager._user_version_keys):
            user = None
    if user is None and session.get('valid'):  # signed in, but as a user gone or changed
        session.logout()
    environ[key] = user
    return user


def _visitor_secret(session):
    """A visitor's CSRF secret, from the visitor cookie this app signed. Two different ones,
    or over eight (they may hide the app's), mean some were planted: none is trusted."""
    manager, found = session.manager, set()
    values = _cookie_values(bottle.request.environ, manager.visitor_cookie)
    for value in values if len(values) <= _MAX_CANDIDATES else ():
        with contextlib.suppress(BadSignature, UnicodeError):
            secret = manager._visitor_signer.unsign(value.encode('ascii'))[0].decode('ascii')
            if _ID_RE.match(secret):
                found.add(secret)
    if len(found) == 1:         # else None
        session.meta['x'] = session.loaded[1]['x'] = found.pop()
        return session.meta['x']


def _csrf_secret(session, create):
    _notice_login(session)
    secret = session.meta.get('x')
    if secret is None and session.new:
        secret = _visitor_secret(session)
    if secret is None and create:
        secret = session.meta['x'] = _new_id()
        if not session.new:             # a stored session: saved with it
            session.modified = True
            if not session.wrapped:     # no wrapper will save it: the original API
                session.manager.save(session)
    if create and session.new and secret != session.loaded[1].get('x'):
        value = session.manager._visitor_signer.sign(secret.encode('ascii')).decode('ascii')
        session.manager._set_cookie(session, session.manager.visitor_cookie, value, None)
        if not session.wrapped:
            _apply_headers(bottle.response, session.cookies)
    return secret


def _csrf_token(session):
    secret = _b64decode(_csrf_secret(session, True).encode('ascii'))
    mask = secrets.token_bytes(SECRET_BYTES)
    return _b64encode(mask + _xor(mask, secret)).decode('ascii')


def _token_fault(session):
    """Why this request's CSRF token does not match the session's secret, or None."""
    token = bottle.request.environ.get('HTTP_X_CSRF_TOKEN')
    if not token:
        with contextlib.suppress(Exception):    # a body bottle cannot parse has no token either
            token = bottle.request.forms.get('csrf_token')
    secret = _csrf_secret(session, False)
    expected = _b64decode(secret.encode('ascii')) if secret else bytes(SECRET_BYTES)
    try:            # not contextlib.suppress: on every request a token decides
        raw = _b64decode(token.encode('ascii')) if token and len(token) == TOKEN_LENGTH else b''
    except (ValueError, UnicodeError):      # not base64url: no token
        raw = b''
    got = _xor(raw[:SECRET_BYTES], raw[SECRET_BYTES:])
    if hmac.compare_digest(got, expected) and secret and len(raw) == 2 * SECRET_BYTES:
        return None
    return 'the form\'s security token is missing or wrong. Go back, reload the form, try again'


def _origin(value):
    """scheme://host[:port], lower case, without the scheme's default port."""
    return re.sub(r'(?s)\A(?:(http://.*):80|(https://.*):443)\Z', r'\1\2', value.strip().lower())


def _origin_fault(environ, trusted):
    """Where the browser says an unsafe request comes from: '' for this origin or a
    trusted one, None if it says nothing (the token decides), else why it is refused."""
    origin, site = environ.get('HTTP_ORIGIN'), environ.get('HTTP_SEC_FETCH_SITE')
    if site in ('same-origin', 'none') or origin is not None and _origin(origin) in trusted:
        return ''
    if site is not None:
        return 'the browser says it comes from another site (Sec-Fetch-Site: %.20s)' % site
    if origin is None:
        return None
    ours = _origin('%s://%s' % bottle.request.urlparts[:2])     # both shown: a proxy's fault
    return '' if _origin(origin) == ours else (
        'the browser says it comes from another origin (%.100s, not %.100s)' % (origin, ours))


def _check_csrf(source, trusted):
    """Refuse this request with 403 unless it passes the CSRF checks. `source`: the
    session, or the manager to load it from if the token must decide."""
    fault = _origin_fault(bottle.request.environ, trusted)
    if fault is None:
        fault = _token_fault(source if isinstance(source, Session) else source._current())
    if fault:
        _refuse(403, 'Refused: %s.' % fault)


def _wants_json():
    """Whether the request's Accept header prefers application/json to HTML."""
    accept = bottle.request.environ.get('HTTP_ACCEPT', '')[:1000]     # a browser's: < 300
    if 'json' not in accept:
        return False
    ranks = {}
    for index, part in enumerate(accept.lower().split(',')):
        kind, _, params = part.partition(';')
        quality = re.search(r'q=([0-9.]+)', params)
        with contextlib.suppress(ValueError):       # a malformed q: the type is left out
            ranks[kind.strip()] = float(quality.group(1)) if quality else 1.0, -index
    return ranks.get('application/json', (0, 0)) > ranks.get('text/html', (0, 0))


def _refuse(status, message, json_too=False):
    """Raise an error response: JSON when asked for (or json_too), else HTML."""
    if json_too or _wants_json():
        raise bottle.HTTPResponse(_json_encode({'error': message, 'status': status}),
                                  status, {'Content-Type': 'application/json'})
    raise bottle.HTTPError(status, message)


###############################################################################
# 5. The plugin and the authenticator #########################################
###############################################################################

class SessionPlugin:
    """Pass the session to handlers that take `session`, and the current user to those that take
    `user`; save it if modified; refuse cross-site POSTs. Any route's session from get_session() or
    current_user() gets its cookies and headers on the response it returns or raises.

    :param load_user: ``fn(user_id)``: the user, or None if gone (signed out); one per manager.
    :param user_version: ``fn(user)``: a string that changes when the user's
        sessions should end, such as the password hash.
    :param csrf: check every request but GET, HEAD, OPTIONS and TRACE (see section 4);
        a route opts out with ``session={'csrf': False}``.
    :param trusted_origins: other origins ('https://admin.example.com') that may post here."""

    name = 'session'
    api = 2

    def __init__(self, session_manager, keyword='session', autosave=True, csrf=True, *,
                 load_user=None, user_version=None, trusted_origins=()):
        if not isinstance(session_manager, BaseSession):
            raise TypeError('SessionPlugin needs a session manager, such as CookieSession()')
        _check_functions(load_user=load_user, user_version=user_version)
        if user_version is not None and load_user is None:
            raise ConfigError('user_version needs load_user: it is a function of the user')
        if isinstance(trusted_origins, str):
            raise TypeError('trusted_origins is a list of origins, not one string')
        for origin in trusted_origins:
            if not re.match(r'https?://[^/\s?#]+\Z', str(origin)):
                raise ConfigError('a trusted origin is scheme://host[:port], not %r' % (origin,))
        self.session_manager, self.keyword, self.autosave = session_manager, keyword, autosave
        self.csrf, self.load_user, self.user_version = csrf, load_user, user_version
        self.trusted_origins = frozenset(_origin(origin) for origin in trusted_origins)
        self.name = 'session' if keyword == 'session' else 'session_' + keyword  # two can coexist

    def setup(self, app):
        if self.keyword in [getattr(p, 'keyword', None) for p in app.plugins if p is not self]:
            raise bottle.PluginError('another plugin uses the keyword %r' % self.keyword)
        users, mine = self.session_manager._users or self, self.load_user is not None
        if mine and (users.user_version is None) != (self.user_version is None):   # one notion
            raise bottle.PluginError('the SessionPlugins of one session manager with '
                                     'load_user must all give user_version, or none')
        if mine:                            # last: a refused plugin changes nothing
            self.session_manager._users = self

    def apply(self, callback, route):
        keyword, autosave, csrf = (route.config.get('session.' + name, getattr(self, name))
                                   for name in ('keyword', 'autosave', 'csrf'))
        try:        # follows functools.wraps, so decorated handlers are seen through
            args = inspect.signature(route.callback).parameters
        except (TypeError, ValueError):
            args = route.get_callback_args()
        wildcard = lambda name: re.search(r'<%s[:>]|:%s\b' % (name, name), route.rule)
        manager, trusted = self.session_manager, self.trusted_origins
        takes_session = keyword in args and not wildcard(keyword)      # a URL's: not ours
        takes_user = 'user' in args and not wildcard('user')
        if self.load_user is not None and manager._users is None:   # one given on one route
            manager._users = self       # (apply=), which Bottle never sets up, when none is

        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            environ = bottle.request.environ
            if csrf and (method := environ['REQUEST_METHOD']) not in _SAFE_METHODS and (
                    method.upper() not in _SAFE_METHODS):    # upper() only if not upper
                _check_csrf(manager, trusted)
            if takes_session:
                kwargs[keyword] = manager._current(True, environ)
            if takes_user and manager._users:   # as it is now: a plugin installed later counts
                kwargs['user'] = _user(manager._users, manager._current(True, environ))
            return manager._handle(environ, callback, args, kwargs, autosave)
        return wrapper


Plugin = SessionPlugin


def _safe_path(target):
    """True for a same-site path like '/a?b=1'; false for URLs, '//host', '/\\host',
    dot segments ('/.//host' is '//host'), blanks, control characters, over-long values."""
    return (isinstance(target, str) and len(target) <= 2048 and bool(_SAFE_PATH_RE.match(target))
            and not _DOT_SEGMENT_RE.search(target.partition('?')[0]))


def authenticator(session_manager, login_url='/auth/login', cookie_expires=None, *,
                  verify=None, require=None, fresh=None, api=False):
    """Make `valid_user`, a decorator factory that requires a signed-in session: a visitor is
    redirected to login_url, and a GET's page is kept for redirect_back() for an hour (the
    original's third argument, `cookie_expires`, is accepted, and unused).

    :param verify: ``fn(session)``, run on every request; false signs it out.
    :param require: ``fn(session)``, who may see the page: a signed-in user for whom it is
        false gets a 403 and stays signed in (admin pages).

    ``valid_user(login_url, verify, require, fresh, api)``, by default as given here, or bare
    ``@valid_user``: `fresh` is the seconds after login past which the user signs in again;
    `api=True` refuses with 401 (or 403) and JSON, not a redirect, as any JSON request is."""
    _check_functions(fresh, verify=verify, require=require)

    def valid_user(login_url=login_url, verify=verify, require=require, fresh=fresh, api=api):
        if callable(login_url):             # @valid_user, without parentheses
            return valid_user()(login_url)
        _check_functions(fresh, verify=verify, require=require)

        def decorator(handler):
            @functools.wraps(handler)
            def check_auth(*args, **kwargs):
                session = session_manager._current(wrapped=True)
                gate = _gate(session, handler, login_url, verify, require, fresh, api)
                return session_manager._handle(     # no-store: Back after a logout asks again
                    bottle.request.environ, gate, args, kwargs, False, 'no-store')
            return check_auth
        return decorator
    return valid_user


def _check_functions(fresh=None, **functions):
    for name, fn in functions.items():
        if fn is not None and not callable(fn):
            raise TypeError('%s must be a function, not %r' % (name, fn))
    fresh is None or _seconds(fresh, 'fresh')


def _gate(session, handler, login_url, verify, require, fresh, api):
    """The handler to run for this request: `handler`, or a refusal."""
    if session.get('valid') and verify is not None and not verify(session):
        session.logout()
    if session.get('valid') and (plugin := _plugin(session.manager)) is not None:
        _user(plugin, session)      # signs out a user who is gone or changed
    to_login = functools.partial(_to_login, session.manager, login_url, api)
    if not session.get('valid'):
        return functools.partial(to_login, 'Sign in to see this page.')
    login = session.login_time
    if fresh is not None and (login is None or session.manager.now() - login > fresh):
        return functools.partial(to_login, 'Sign in again to see this page.')
    name = session.get('name') if session.user_id is None else str(session.user_id)
    if isinstance(name, str) and name.isprintable():    # no CR/LF into headers
        bottle.request.environ['REMOTE_USER'] = name
    if require is not None and not require(session):
        return lambda *args, **kwargs: _refuse(
            403, 'You are signed in, but may not see this page.', api)
    return handler


def _to_login(manager, login_url, api, message, *args, **kwargs):
    """Refuse with 401 and JSON for an API, else remember the page and redirect."""
    if api or _wants_json():
        _refuse(401, message, True)
    safe, query = "/:@!$&'()*+,;=-._~", bottle.request.query_string
    target = urllib.parse.quote(bottle.request.fullpath, safe=safe) + (
        '?' + urllib.parse.quote(query, safe=safe + '?%') if query else '')
    if _safe_path(target) and bottle.request.method in ('GET', 'HEAD'):    # not a POST's
        bottle.response.set_cookie(REDIRECT_COOKIE, target, path='/', max_age=3600,
                                   httponly=True, secure=manager.secure, samesite='Lax')
        bottle.response.set_header('Cache-Control', 'no-store')     # it sets a cookie
    _redirect(login_url)


def redirect_back(default='/'):
    """Redirect to the page the authenticator kept, if a safe same-site path, else `default`."""
    target = (_cookie_values(bottle.request.environ, REDIRECT_COOKIE) or [None])[0]
    bottle.response.delete_cookie(REDIRECT_COOKIE, path='/')
    _redirect(target if _safe_path(target) else default)


def _redirect(url):
    """bottle.redirect(), but `url` as given where bottle cannot parse the Host ('[')."""
    try:
        bottle.redirect(url)
    except ValueError:          # from joining `url` to the request's URL: a 500
        bottle.response.status = 303
        bottle.response.set_header('Location', url)     # which browsers resolve alike
        raise bottle.response.copy(cls=bottle.HTTPResponse) from None


###############################################################################
# 6. The stores ###############################################################
###############################################################################

# Private directories, which no other user can change or swap: the stores' and the secret's.

_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_DIRECTORY = getattr(os, 'O_DIRECTORY', 0)
_O_NONBLOCK = getattr(os, 'O_NONBLOCK', 0)      # a FIFO opened to read waits for a writer
_O_SEARCH = _O_DIRECTORY | getattr(os, 'O_PATH', 0)    # a directory we may pass, not list
_PLANTED_PICKLE = 'can plant session files, and unpickling them runs their code'
_PLANTED_SQLITE = 'can plant a session database, and with it a signed-in session'


def _default_dir():
    return os.path.join(tempfile.gettempdir(), 'bottlesession-%d' % getattr(os, 'geteuid', int)())


def _on_defaults(options, shared):
    """Every app of this user shares the defaults (the derived secret, this directory):
    a store on them is bound to the file that made it, unless given a namespace."""
    if shared and not options.get('namespace'):
        frame = sys._getframe()
        while frame.f_back and frame.f_globals is globals():
            frame = frame.f_back        # %a: a file name need not be UTF-8
        options['namespace'] = 'app:%a' % os.path.abspath(frame.f_globals.get('__file__', '.'))
    return options


def _open_private_dir(path, what='session directory', planted=_PLANTED_PICKLE, create=True,
                      leaf=False):
    """Open directory `path` (leaf=True: file `path`, to read) from /, not following another
    user's symlink: each directory on the way root's or ours, writable by others only if sticky
    (/tmp); directory `path` ours alone, made 0700 if missing (create=True; no symlink)."""
    parts, hops, fd = path.split(os.sep)[1:], 0, os.open('/', os.O_RDONLY | _O_DIRECTORY)
    try:
        while parts:
            part, st = parts.pop(0), os.fstat(fd)
            if st.st_uid not in (0, os.geteuid()) or (
                    st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
                raise ConfigError('the directory above %r could be changed by another '
                                  'user, who %s' % (part, planted))
            if create and not parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            link = part not in ('', '.') and os.stat(part, dir_fd=fd, follow_symlinks=False)
            if link and stat.S_ISLNK(link.st_mode):
                hops += 1
                if create and not parts or link.st_uid not in (0, os.geteuid()) or hops > 40:
                    raise ConfigError('%r, on the way to the %s %r, is a symlink of another user '
                                      'or the directory itself: give the real path. Whoever can '
                                      'swap it %s' % (part, what, path, planted))
                target = os.readlink(part, dir_fd=fd)
                parts[:0] = target.split(os.sep)
                if target.startswith(os.sep):
                    os.close(fd)
                    fd = os.open('/', os.O_RDONLY | _O_DIRECTORY)
            elif link:
                flags = _O_NONBLOCK if leaf and not parts else _O_SEARCH    # a FIFO: no wait
                below = os.open(part, os.O_RDONLY | _O_NOFOLLOW | flags, dir_fd=fd)
                os.close(fd)
                fd = below
        leaf or _check_private(path, os.fstat(fd), what, planted)
        return fd
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise ConfigError('cannot use the %s %r: %s' % (what, path, exc)) from exc
        raise


def _check_private(path, st, what, planted):
    """Refuse a directory or file (`st` its stat) that another user owns or
    others can write: whoever can, can plant what we would trust."""
    if hasattr(os, 'geteuid') and st.st_uid != os.geteuid():
        raise ConfigError('%s %r is owned by uid %d, not by this user (uid %d): whoever '
                          'owns it %s' % (what, path, st.st_uid, os.geteuid(), planted))
    if st.st_mode & 0o022:
        private = 'a private directory (mode 0700)' if stat.S_ISDIR(st.st_mode) else 'mode 0600'
        raise ConfigError('%s %r is writable by others (mode %o): anyone who can write it '
                          '%s. Use %s.' % (what, path, stat.S_IMODE(st.st_mode), planted, private))
    # Session files, and the file store's directory: names tell too (the original's are cookies).
    if st.st_mode & 0o044 and (what == 'session directory' or not stat.S_ISDIR(st.st_mode)):
        risk = (('list its sessions', '0700') if stat.S_ISDIR(st.st_mode)
                else ('read every session in it', '0600'))
        raise ConfigError('%s %r is readable by others (mode %o): they would %s. Use mode %s.'
                          % ((what, path, stat.S_IMODE(st.st_mode)) + risk))


def _write_file(directory, name, blob, mtime=None, replace=False, before=None):
    """Write `blob` whole to `name` in `directory` (a descriptor): to a temp file, passed whole to
    before(temp) if given, then renamed (replace=True) or linked: False if `name` was there."""
    temp = '.tmp-' + os.urandom(8).hex()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600, dir_fd=directory)
    try:
        try:                        # os.write, not a file object: this is on every save
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            if mtime is not None:   # the file store's mtime is its session's end
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
        if before is not None:
            before(temp)
        if replace:
            os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
            temp = None             # nothing left to remove: a syscall saved per save
        else:
            os.link(temp, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    finally:
        if temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=directory)


# Secrets and signing #########################################################

def derive_key(secret, salt):
    """HMAC-SHA256(secret, 'bottlesession.' + salt): a key for one purpose, so a signature
    made for one is worthless for another. It does not strengthen a weak secret."""
    return hmac.new(secret, b'bottlesession.' + salt, hashlib.sha256).digest()


def _warn(message):
    """An InsecureSecretWarning at the app's line: the first caller outside this module."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals is globals():
        frame, level = frame.f_back, level + 1
    warnings.warn(InsecureSecretWarning(message), stacklevel=level)


def machine_secret():
    """A secret for when none is given, with a warning: from a random key kept in the
    private per-user temp directory, so it holds across restarts until that is cleared."""
    path, name = os.path.join(_default_dir(), 'machine-secret'), 'machine-secret'
    try:
        directory = _open_private_dir(_default_dir())
        try:
            _write_file(directory, name, secrets.token_bytes(32))     # or keep the one there
            with open(os.open(name, os.O_RDONLY | _O_NOFOLLOW, dir_fd=directory), 'rb') as file:
                st, key = os.fstat(file.fileno()), file.read(33)
        finally:
            os.close(directory)
    except (OSError, ConfigError) as exc:
        raise ConfigError('no secret was given, and the key to derive one cannot be '
                          'kept in %r (%s): pass secret= or secret_file=' % (path, exc)) from exc
    if (not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or len(key) != 32
            or (hasattr(os, 'geteuid') and st.st_uid != os.geteuid())):
        raise ConfigError('no secret was given, and %r is not a private 32-byte key '
                          'file of this user: pass secret= or secret_file=' % path)
    _warn('no secret given: derived one from a key in %s. Sessions end when that is cleared '
          '(often at a reboot), and several servers cannot share them. Pass secret= or '
          'secret_file=.' % _default_dir())
    return hashlib.sha256(b'bottlesession:' + key).hexdigest().encode('ascii')


def _read_secret_file(path):
    """The first line of a file no other user can write or swap, nor read if it is ours."""
    try:    # walked to as the stores' directories are: whoever swaps it for /etc/passwd knows it
        with open(_open_private_dir(os.path.abspath(path), 'secret_file', 'can make the secret '
                  'a file they can read, and sign any session', False, leaf=True), 'rb') as source:
            line, st = source.readline().strip(), os.fstat(source.fileno())     # a FIFO: b''
    except OSError as exc:
        raise ConfigError('cannot read secret_file %r: %s' % (path, exc.strerror or exc)) from exc
    if (len(line) < 16 or line.startswith((b'#', b'-----')) or st.st_uid not in (0, os.geteuid())
            or st.st_mode & (0o027 if st.st_uid == os.geteuid() else 0o022)):
        raise ConfigError('secret_file %r must be ours (as root, every file is) and unreadable '
                          'by others, or root\'s and unwritable by others, and hold a first line '
                          'of 16 bytes or more, not a comment or PEM header, such as secrets.'
                          'token_urlsafe(32); it is uid %d, mode %o, %d bytes'
                          % (path, st.st_uid, stat.S_IMODE(st.st_mode), len(line)))
    return line


def _load_secrets(secret, secret_file):
    """The list of secrets as bytes, newest first, from the constructor's arguments."""
    if secret is not None:
        if not secret:      # '' or []: os.environ.get('SECRET', '') must not mean "derive one"
            raise ConfigError('secret is empty: give a secret (or a list of them), or leave '
                              'it out to derive one from the machine')
        found = list(secret) if isinstance(secret, (list, tuple)) else [secret]
    elif secret_file is not None:
        found = [_read_secret_file(secret_file)]
    else:
        found = [machine_secret()]
    for item in found:
        if not isinstance(item, (str, bytes)) or not item:
            raise TypeError('each secret must be a non-empty str or bytes, not %r' % (item,))
    keys = [item.encode('utf-8') if isinstance(item, str) else item for item in found]
    if any(len(key.strip()) < 16 for key in keys):
        _warn('a session secret is shorter than 16 bytes, blanks around it aside: it can be '
              'guessed. Use secrets.token_urlsafe(32).')
    return keys


class Signer:
    """Sign and verify bytes with HMAC-SHA256 under one or more secrets: the first signs, all
    verify, so they can be rotated. Keys are derived for `salt`; `context` is bound into each."""

    def __init__(self, secrets, salt, context=b''):
        if not secrets:
            raise ConfigError('Signer needs at least one secret')
        # HMAC (RFC 2104) on hashlib's states, keyed once with the context fed in:
        # a signature copies two. hmac's copy() costs a tenth of a cookie request.
        self._macs = []
        for key in (derive_key(secret, salt) for secret in secrets):
            inner, outer = (hashlib.sha256(bytes(b ^ pad for b in key.ljust(64, b'\0')))
                            for pad in (0x36, 0x5c))
            inner.update(context + b'\0')
            self._macs.append((inner, outer))

    def signature(self, message, index=0):
        inner, outer = self._macs[index]
        inner, outer = inner.copy(), outer.copy()
        inner.update(message)
        outer.update(inner.digest())
        return _b64encode(outer.digest())

    sign = lambda self, message: message + b'.' + self.signature(message)

    def unsign(self, signed):
        """Return (message, index of the secret that verified) or raise BadSignature."""
        message, dot, sig = signed.rpartition(b'.')
        if not dot:
            raise BadSignature('no signature')
        for index in range(len(self._macs)):
            if hmac.compare_digest(sig, self.signature(message, index)):
                return message, index
        raise BadSignature('signature does not match')


def _context(manager):
    """What a signature binds: the cookie's name, path, domain and namespace."""
    return '\0'.join([manager.cookie_name, manager.path, manager.domain or '']
                      + ([manager.namespace] if manager.namespace else [])).encode('utf-8')


def _sign_with(manager, keys):
    """Key the visitor CSRF cookies' signer and the user_version hashes."""
    manager._visitor_signer = Signer(keys, b'csrf-visitor', _context(manager))
    manager._flash_signer = Signer(keys, b'flash-visitor', _context(manager))
    manager._user_version_keys = [derive_key(key, b'user-version') for key in keys]


# CookieSession ###############################################################

def _count(hits, now, limit, period):
    """The attempts a rate limit keeps: the last `limit` in `period`, and this."""
    return [t for t in hits if t > now - period][-limit:] + [now]


class CookieSession(BaseSession):
    """Keeps the session in a signed cookie, so the server stores nothing. Data must be
    JSON, with str keys; the client can read and replay it (see above).

    :param secret: str or bytes, or a list of them, newest first, to rotate keys. Without
        it or secret_file (its first line, 16 bytes or more, in a file others cannot read
        or write), one is derived, with a warning."""

    salt = b'cookie-session'
    max_cookie_size = 8192       # what we even look at; a valid one is <= 4093
    max_decompressed = 256 * 1024
    recent_values = 1024    # the values signed lately whose JSON (<= 4 KB) loads without HMAC

    def __init__(self, secret=None, secret_file=None, cookie_name='session_data',
                 secure=False, httponly=True, cookie_expires=DEFAULT_MAX_AGE, *,
                 compress=False, **options):
        _on_defaults(options, secret is None and secret_file is None)
        super().__init__(cookie_expires, cookie_name=cookie_name, secure=secure,
                         httponly=httponly, **options)
        keys = _load_secrets(secret, secret_file)
        self.signer = Signer(keys, self.salt, _context(self))
        _sign_with(self, keys)
        self.compress, self._limits, self._limits_sweep, self._signed = compress, {}, 10000, {}

    def user_sessions(self, user_id, keep=None):
        raise ConfigError('%s cannot list or end a user\'s sessions: browsers hold them. Give '
                          'SessionPlugin(..., user_version=fn) to end them when the user\'s '
                          'version changes.' % type(self).__name__)

    end_sessions = user_sessions

    def rate_limit(self, key, limit, period):
        """Count one attempt for `key`, such as 'login:' + name: True while at most `limit`
        fall within the last `period` seconds. Counted in this process only."""
        now, key = self.now(), _digest(key)
        with _LIMITS_LOCK:
            if len(self._limits) > self._limits_sweep:  # forget keys whose periods passed
                self._limits = {k: v for k, v in self._limits.items() if v[0] > now}
                self._limits_sweep = max(10000, 2 * len(self._limits))     # not every call
            hits = _count(self._limits.get(key, (0, []))[1], now, limit, period)
            self._limits[key] = now + period, hits
        return len(hits) <= limit

    def reset_rate_limit(self, key):
        """Forget the attempts counted for `key`: call it after a good login."""
        with _LIMITS_LOCK:
            self._limits.pop(_digest(key), None)

    def load(self, value):
        try:
            text, stamp = self._signed.get(value) or self._verify(value)
            record = _json_decode(text)
            created, data, sid = float(record.pop('c')), record.pop('d'), record.pop('i')
        except (KeyError, AttributeError, zlib.error, *_NOT_JSON) as exc:
            raise BadSession('malformed payload') from exc      # or nested past Python's limit
        if not isinstance(data, dict) or not isinstance(sid, str) or not _ID_RE.match(sid):
            raise BadSession('malformed session')
        record.update(c=created, a=stamp)
        return Session(self, sid, data, record, value)

    def _verify(self, value):
        """The (JSON, timestamp) a value signs; raises what load() makes a BadSession."""
        if len(value) > self.max_cookie_size or not _SIGNED_RE.match(value):
            raise BadSession('cookie is oversized or not base64url')    # the context ends there
        body, _ = self.signer.unsign(value.encode('ascii'))
        payload, dot, stamp = body.rpartition(b'.')
        if not dot or not stamp.isdigit():
            raise BadSession('no timestamp')
        raw = _b64decode(payload.removeprefix(b'.'))
        if payload.startswith(b'.'):        # compressed
            inflater = zlib.decompressobj()
            raw = inflater.decompress(raw, self.max_decompressed)
            if inflater.unconsumed_tail or not inflater.eof:
                raise BadSession('compressed payload too large or truncated')
        return raw.decode('utf-8'), int(stamp)

    def persist(self, session):
        record = _record(session)
        del record['a']                 # the timestamp says it
        record['i'] = session.id
        raw = _to_json(record).encode('ascii')
        payload = _b64encode(raw)
        if self.compress:
            if len(raw) > self.max_decompressed:    # load() would refuse it: a silent logout
                raise SessionTooLarge(len(raw), self.max_decompressed)
            packed = b'.' + _b64encode(zlib.compress(raw, 9))
            payload = min(payload, packed, key=len)     # the shorter; on a tie, uncompressed
        value = self.signer.sign(b'%s.%d' % (payload, session.meta['a'])).decode('ascii')
        size = len(self.cookie_name) + 1 + len(value)
        if size > COOKIE_LIMIT:
            raise SessionTooLarge(size, COOKIE_LIMIT)
        if len(self._signed) >= self.recent_values:     # a bound, not an LRU: clear() is atomic
            self._signed.clear()
        if len(raw) <= COOKIE_LIMIT:        # a compressed one's may be 256 KB: not kept
            self._signed[value] = raw.decode('ascii'), int(session.meta['a'])
        return value, value

    delete = staticmethod(lambda sid: None)     # nothing stored: invalidate() ends the cookie


# ServerSession: the server-side stores' base, and the merge #################

def _merge(base, ours, theirs, canonical):
    """Apply the changes from `base` to `ours` onto `theirs`, a newer version:
    a key both changed is ours. Values compare by canonical(value), bytes."""
    merged = dict(theirs)
    for key in base.keys() | ours.keys():
        if key not in ours:
            merged.pop(key, None)
        elif key not in base or canonical(base[key]) != canonical(ours[key]):
            merged[key] = ours[key]
    return merged


def _merge_flashes(base, ours, theirs, merged):
    """Flashes are a queue: theirs, less those shown here, plus those added (duplicates stay)."""
    key = Session.flash_key
    queues = [d.get(key) if isinstance(d.get(key), list) else [] for d in (base, ours, theirs)]
    if queues[0] == queues[1]:
        return
    counts = [collections.Counter(map(repr, queue)) for queue in queues[:2]]
    shown, added = counts[0] - counts[1], counts[1] - counts[0]
    queue = []      # a message counted off is dropped from theirs, taken from ours
    for messages, tally, wanted in (queues[2], shown, False), (queues[1], added, True):
        for message in messages:
            counted = tally[repr(message)] > 0
            tally[repr(message)] -= counted
            if counted == wanted:
                queue.append(message)
    merged.pop(key, None)
    if queue:
        merged[key] = queue[-Session.flash_limit:]


def _merge_record(base, ours, theirs, store):
    """Merge two stored records, their meta and their data, key by key, as `store` compares."""
    meta = [{k: v for k, v in record.items() if k != 'd'} for record in (base, ours, theirs)]
    data = [record.get('d') or {} for record in (base, ours, theirs)]
    merged = dict(_merge(*meta, store._canonical), d=_merge(*data, store._canonical))
    _merge_flashes(*data, merged['d'])
    return merged


class ServerSession(BaseSession):
    """Base for stores that keep the data on the server and an id in the cookie.

    A session is kept under storage_key(id), a hash: a copy of the store holds no usable
    cookie, and unknown ids are never adopted. Concurrent saves of one session merge (see
    _swap). The store interface, all a new store implements, on keys of 64 hex characters and
    blobs that dumps() made:

        read(key)       -> the blob under key, or None if none is, or it expired
        write(key, blob, expires, expected=None, replaces=None, user=None)
                        -> whether it stored blob under key until `expires`, and removed `replaces`
                           (a login's old key), in one atomic step, only if `replaces or key` holds
                           `expected` (None: no live record); user_records(user) finds it.
        remove(key)     -> whether a record was there
        user_records(user) -> [(key, blob)] of the records written with `user`
        purge(now)      -> how many expired records were removed

    It may override dumps(), loads() and, if equal values dump unequal (pickles), _canonical().

    :param cleanup_chance: the chance that saving a new session runs cleanup().
    :param secret: signs visitors' CSRF and flash cookies, keys user_version hashes;
        without it, a visitor's CSRF cookie holds in this process only, flashes are stored."""

    legacy_ids = False
    swap_attempts = 100     # compare-and-set rounds before a 503 (about 1.5 s of waits)
    max_size = 4 << 20      # a session's bytes in any store (a save's two fit MariaDB's 16 MB)

    def __init__(self, cookie_expires=DEFAULT_MAX_AGE, *, cleanup_chance=0.001, secret=None,
                 secret_file=None, **options):
        super().__init__(cookie_expires, **options)
        if not 0 <= cleanup_chance <= 1:
            raise ConfigError('cleanup_chance must be between 0 and 1')
        self.cleanup_chance = cleanup_chance
        # A request hashes its id twice, at load and at save: 6% of a SQLite save.
        self.storage_key = functools.lru_cache(maxsize=1024)(self.storage_key)
        identity = _json_encode([self.cookie_name, self.path, self.domain, self.namespace])
        self._identity = hashlib.sha256(b'bottlesession.key\0%s\0' % identity.encode('utf-8'))
        if secret is not None or secret_file is not None:
            _sign_with(self, _load_secrets(secret, secret_file))
        else:                   # a key of this process's own; a visitor's flashes are stored
            _sign_with(self, [secrets.token_bytes(32)])
            self._user_version_keys, self._flash_signer = [self._identity.copy().digest()], None

    def storage_key(self, sid):
        """A hash of `sid` and the cookie's name, path, domain and namespace, so another
        app's ids are unknown here. The original's files keep their uuid4 names."""
        if self.legacy_ids and len(sid) == 36:
            return sid
        digest = self._identity.copy()
        digest.update(sid.encode('utf-8', 'surrogatepass'))
        return digest.hexdigest()

    def _key(self, kind, name):
        """The key of a user's index or a rate limit: apart from every session's."""
        digest = self._identity.copy()
        digest.update(b'\0%s\0%s' % (kind, _json_encode(name).encode('utf-8')))
        return digest.hexdigest()

    def _user_key(self, record):
        signed_in = record.get('u') is not None and record['d'].get('valid')
        return self._key(b'user', str(record['u'])) if signed_in else None

    # The store's part, on the interface above ################################
    dumps = lambda self, record: _to_json(record)
    _canonical = dumps      # what the merge compares: bytes equal for equal values
    loads = lambda self, blob: _json_decode(blob if isinstance(blob, str) else blob.decode())

    def _parse(self, blob):
        """The record in a blob, or None if it is not one of ours."""
        try:        # not contextlib.suppress: this runs on every request
            record = self.loads(blob)
            times = record['c'] + record['a'] + record.get('e', 0) + record.get('l', 0)
            if (isinstance(record['d'], dict) and math.isfinite(times)     # not NaN, inf
                    and ('x' not in record or _ID_RE.match(record['x']))):
                return record
        except Exception:       # damaged, foreign or truncated: unknown (None)
            pass

    @staticmethod
    def _hide(record, sid):
        """The CSRF secret as stored: masked with a hash of the id, which is not
        stored, so a copy of the store cannot make tokens. Its own inverse."""
        if 'x' in record:
            pad = hashlib.sha256(b'bottlesession.csrf\0' + sid.encode('utf-8')).digest()
            secret = _b64decode(record['x'].encode('ascii'))
            record['x'] = _b64encode(_xor(secret, pad)).decode('ascii')
        return record

    def load(self, value):
        if not (_ID_RE.match(value) or self.legacy_ids and _UUID4_RE.match(value)):
            raise BadSession('malformed session id')
        blob = self.read(self.storage_key(value))
        record = None if blob is None else self._parse(blob)
        if record is None:
            raise BadSession('unknown session id')
        data = self._hide(record, value).pop('d')
        data.pop('sessionid', None)     # written by bottlesession 2.0
        session = Session(self, value, data, record, blob)
        if len(value) != ID_LENGTH:     # the original's uuid4 names its file: a new id now
            _rotate(session)
        return session

    def _fresh(self, environ, now):
        """A new session, with a visitor's flashes from the cookie _keep_flashes() signed."""
        session = super()._fresh(environ, now)
        for value in _cookie_values(environ, self.flash_cookie)[:_MAX_CANDIDATES]:
            with contextlib.suppress(BadSignature, AttributeError, *_NOT_JSON):
                made, queue = _json_decode(_b64decode(self._flash_signer.unsign(
                    value.encode('ascii'))[0]).decode('ascii'))
                if isinstance(queue, list) and now - 3600 <= made:
                    dict.__setitem__(session, Session.flash_key, queue)
                    break
        return session

    def _keep_flashes(self, session):
        """Whether a new session holds nothing, or only flashes and a secret= was given: not
        stored, its flashes in a signed cookie, lest clients fill the store by failed logins."""
        queue, allowed = session.get(Session.flash_key), {'sessionid', 'valid', Session.flash_key}
        only = not (session.get('valid') or 'e' in session.meta or session.keys() - allowed)
        value, signer = None, only and queue and self._flash_signer
        with contextlib.suppress(*_NOT_JSON):       # not JSON: stored
            value = signer and signer.sign(_b64encode(_json_encode(
                [int(self.now()), queue]).encode('ascii'))).decode('ascii')
        keep = only and not queue or value and len(self.flash_cookie + value) < COOKIE_LIMIT
        if keep and queue:
            self._set_cookie(session, self.flash_cookie, value, 3600)
        elif self.flash_cookie in session.cookies or _cookie_values(    # stored, or shown
                bottle.request.environ, self.flash_cookie):
            self._set_cookie(session, self.flash_cookie, '', 0)
        return bool(keep)

    def persist(self, session):
        if session.new and self._keep_flashes(session):
            return None, None
        if session.new and self.cleanup_chance and random.random() < self.cleanup_chance:
            try:
                self.cleanup()
            except Exception as exc:        # a sweep must not fail the request it rides on
                _log.warning('session cleanup failed: %s', exc)
        send = session.new or session.old_id or session.meta.get('e') != session.loaded[1].get('e')
        old = session.old_id and self.storage_key(session.old_id)
        ours = self._hide(_record(session), session.id)
        blob, record = self._swap(session, ours, self.storage_key(session.id), old)
        if blob is None:
            return None, None
        if record is not ours:          # the newer keys, for the rest of the request
            session.meta = self._hide({k: v for k, v in record.items() if k != 'd'}, session.id)
            session._refill(record['d'])
        return blob, session.id if send else None

    def _swap(self, session, ours, key, old):
        """Write `ours` by compare-and-set, merged onto what others saved since: (blob, record)
        as written, or (None, None) if it was deleted or damaged meanwhile (a login redoes it)."""
        version, record, base = session.loaded[0], ours, None
        # A sign-out, or a login as another (id; with none, the original's name), merges nothing.
        (valid, name), data, uid = session.loaded[2], ours['d'], session.loaded[1].get('u')
        was = valid and (str(uid), uid is None and name)
        reset = was and was != (data.get('valid') and (
            str(ours.get('u')), ours.get('u') is None and data.get('name')))
        for attempt in range(self.swap_attempts):
            user = record['k'] = self._user_key(record)     # this app's, unlike 'u'
            blob = self.dumps(record)
            if len(blob) > self.max_size:
                raise SessionTooLarge(len(blob), self.max_size)
            if self.write(key, blob, math.ceil(self.expires_at(record)), version, old, user):
                return blob, record
            time.sleep(random.random() * 0.0005 * (2 ** min(attempt, 6) - 1))  # lost: up to 32 ms
            theirs = self.read(old or key)
            if theirs == blob:          # a retried write that had landed after all
                return blob, record
            if base is None:
                base = self._parse(session.loaded[0]) if version is not None else {}
            newer = self._parse(theirs)     # None: gone, empty or damaged
            if newer is None:
                if not (session.get('valid') and session.meta.get('l') != session.loaded[1].get('l')):
                    return None, None
                # A login on a session gone meanwhile: afresh, signed in.
                theirs, old, newer = None, None, dict(ours, d={'valid': True})
            version, record = theirs, ours if reset else _merge_record(base, ours, newer, self)
        raise SessionStoreError('session %s… changed under %d saves in a row'
                                % (session.id[:6], self.swap_attempts))

    delete = lambda self, sid: self.remove(self.storage_key(sid))
    cleanup = lambda self: self.purge(self.now())

    # Users and rate limits ###################################################
    def _user_records(self, user_id):
        now, user_id = self.now(), _user_id(user_id)
        for key, blob in self.user_records(self._key(b'user', user_id)):
            record = self._parse(blob)
            if (record is not None and str(record.get('u')) == user_id and record['d'].get('valid')
                    and now <= self.expires_at(record)):
                yield key, record

    def user_sessions(self, user_id):
        """The live sessions of `user_id`, as dicts of 'key' (no cookie) and times."""
        return [{'key': key, 'created': record['c'], 'accessed': record['a'],
                 'expires': self.expires_at(record), 'login': record.get('l')}
                for key, record in self._user_records(user_id)]

    def end_sessions(self, user_id, keep=None):
        """End every session of `user_id` but `keep` (a Session); return how many."""
        # keep's old_id too: a login in this request moves its record only at the save
        kept = [self.storage_key(sid) for sid in (keep.id, keep.old_id) if sid] if keep else []
        ended = empty = 0
        for _ in range(10):     # until two listings find none: one may miss a session changing id
            found = [key for key, _ in self._user_records(user_id) if key not in kept]
            ended += sum(bool(self.remove(key)) for key in found)
            empty = 0 if found else empty + 1
            if empty == 2:
                break
        return ended

    def rate_limit(self, key, limit, period):
        """As CookieSession.rate_limit, but counted in the store, for all processes."""
        name = self._key(b'rate', key)
        for attempt in range(self.swap_attempts):
            now, blob, hits = self.now(), self.read(name), []
            with contextlib.suppress(Exception):    # a damaged count: none
                hits = [float(t) for t in self.loads(blob)['h']] if blob else []
            hits = _count(hits, now, limit, period)
            record = {'n': _new_id(), 'h': hits}    # a nonce: two counts of one moment differ
            if self.write(name, self.dumps(record), math.ceil(now + period), blob):
                return len(hits) <= limit
            time.sleep(random.random() * 0.0005 * (2 ** min(attempt, 6) - 1))   # as _swap's
        raise SessionStoreError('the rate limit %r changed under %d attempts in a row'
                                % (key, self.swap_attempts))

    reset_rate_limit = lambda self, key: self.remove(self._key(b'rate', key))


# PickleSession ###############################################################

class PickleSession(ServerSession):
    """Keeps each session in a file, ``session-<key>``, in a private directory. Any
    picklable value may be stored; the original's files still load, and user_sessions()
    reads every file: it suits thousands, not millions.

    :param session_dir: by default a per-user directory in the temp dir, made 0700. A symlink,
        or a directory another user owns or can write, is refused: a planted pickle runs."""

    legacy_ids = True
    stale_temp_age = 300     # seconds after which cleanup() removes a temp file
    lock_timeout = 5         # seconds a save waits for another's lock before a 503

    def __init__(self, session_dir=None, cookie_expires=DEFAULT_MAX_AGE, **options):
        super().__init__(cookie_expires, **_on_defaults(options, not session_dir))
        # os.open takes dir_fd wherever these do; eventlet's green os.open is not listed
        if fcntl is None or not {os.stat, os.rename, os.unlink} <= os.supports_dir_fd:
            raise ConfigError('PickleSession needs dir_fd support (a POSIX system)')
        self.session_dir = os.path.abspath(session_dir or _default_dir())
        # Every file operation is relative to this descriptor: the checked path cannot be swapped.
        self._dir_fd = _open_private_dir(self.session_dir)     # fail now, not on a request
        weakref.finalize(self, os.close, self._dir_fd)          # closed with the store

    dumps = staticmethod(functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL))
    loads = staticmethod(pickle.loads)

    class _SetsInOrder(pickle.Pickler):   # a set of objects hashed by id unpickles in any order
        def persistent_id(self, obj):       # so its members go in one order, by their pickles
            return (type(obj).__name__, sorted(obj, key=PickleSession.dumps)
                    ) if type(obj) in (set, frozenset) else None

    @staticmethod
    def _canonical(value):
        """What the merge compares: a pickle with sets in order; too deep for that, never equal."""
        with contextlib.suppress(RecursionError):
            PickleSession._SetsInOrder(out := io.BytesIO(), pickle.HIGHEST_PROTOCOL).dump(value)
            return out.getvalue()
        return object()     # this request's value is kept

    @staticmethod
    def _name(key):
        if not _KEY_RE.match(key) and not _UUID4_RE.match(key):
            raise ValueError('invalid session key %r' % (key,))     # never a path unchecked
        return 'session-' + key

    def _open(self, name, flags):
        """os.open in the directory; if the directory is gone, reopen it and retry once."""
        try:
            return os.open(name, flags | _O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
        except FileNotFoundError:
            if not self._reopen():
                raise
        return os.open(name, flags | _O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)

    def _reopen(self):
        """Whether to retry a miss: the directory was gone (a temp cleaner, say) or its path names
        another; reopened, checked, onto the descriptor threads in flight use (dup2(): atomic)."""
        with contextlib.suppress(FileNotFoundError):
            held = os.fstat(self._dir_fd)
            named = os.stat(self.session_dir, follow_symlinks=False)
            if held.st_nlink and (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                return False
        try:
            fd = _open_private_dir(self.session_dir)
        except ConfigError as exc:     # e.g. re-created by another user
            raise SessionStoreError('refusing the session directory: %s' % exc) from exc
        try:
            os.dup2(fd, self._dir_fd, inheritable=False)
        finally:
            os.close(fd)
        return True

    def read(self, key, held=False):    # held: under the key's lock, which removal needs
        try:
            fd = self._open(self._name(key), os.O_RDONLY)
            try:                        # os.read, not a file object: on every request
                st = os.fstat(fd)
                if len(key) == 64 and st.st_mtime < self.now():     # its end has passed: gone,
                    if not held:        # removed under its lock: a save may be replacing it
                        self._expire(key)
                    return None
                blob = os.read(fd, st.st_size)      # whole: files are replaced, not changed
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SessionStoreError('cannot read session file: %s' % exc) from exc
        if len(key) == 36:              # the original's: the data alone, aged by the file
            try:
                data = pickle.loads(blob)
            except Exception:
                return None
            return self.dumps({'c': st.st_mtime, 'a': st.st_mtime, 'd': data})  # a non-dict: refused
        return blob

    def write(self, key, blob, expires, expected=None, replaces=None, user=None):
        def swap():     # a login's old file goes once the new has its name: none is lost
            done = self.read(replaces or key, True) == expected and _write_file(
                self._dir_fd, self._name(key), blob, expires, replace=True)
            done and replaces and self._unlink(replaces)
            return done
        return self._locked(replaces or key, swap)

    remove = lambda self, key: self._locked(key, lambda: self._unlink(key))

    def _locked(self, key, work, wait=True):
        """work() under flock on one of 16 lock files, opened anew to exclude threads and forked
        workers alike. Held past lock_timeout (a stopped process): a 503; without wait: None."""
        try:
            fd = self._open('.lock-%d' % (int(key[-2:], 16) % 16), os.O_RDWR | os.O_CREAT)
            try:
                end = time.monotonic() + self.lock_timeout
                for attempt in itertools.count():   # tries further apart, up to 16 ms
                    try:            # not contextlib.suppress: this runs on every save
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not wait:
                            return None
                        if time.monotonic() >= end:
                            raise SessionStoreError('a session file stayed locked for %s s'
                                                    % self.lock_timeout) from None
                        time.sleep(0.0005 * 2 ** min(attempt, 5))
                return work()
            finally:        # unlocked, not just closed: a child forked meanwhile has a copy
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        except OSError as exc:
            raise SessionStoreError('cannot write session file: %s' % exc) from exc

    def _expire(self, key):
        with contextlib.suppress(SessionStoreError):    # housekeeping: never an error
            return self._locked(key, lambda: self.read(key, True) is None and self._unlink(key),
                                wait=False)     # another has it: left to a later cleanup

    def _unlink(self, key):     # whether it was there
        with contextlib.suppress(FileNotFoundError):
            return os.unlink(self._name(key), dir_fd=self._dir_fd) or True
        return False

    def _scan(self):
        """(name, stat) of each file, through a descriptor of its own: dups share offsets."""
        scan = os.open('.', os.O_RDONLY | _O_DIRECTORY, dir_fd=self._dir_fd)
        try:
            with os.scandir(scan) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        yield entry.name, entry.stat(follow_symlinks=False)
        finally:
            os.close(scan)

    def user_records(self, user):
        found = []
        for name, _ in self._scan():
            if name.startswith('session-') and _KEY_RE.match(name[8:]):   # not a stray file
                blob = self.read(name[8:])
                record = blob and self._parse(blob)     # 'k': this app's (none in older records)
                if record and record.get('k', self._user_key(record)) == user:
                    found.append((name[8:], blob))
        return found

    def purge(self, now):
        """Remove session files whose end has passed, and stale temp files."""
        legacy, removed = min(self.max_age, self.idle_timeout or self.max_age), 0
        for name, st in self._scan():
            key = name[8:] if name.startswith('session-') else ''
            if _KEY_RE.match(key):      # under its lock, seen ended there: a save may replace it
                removed += st.st_mtime < now and bool(self._expire(key))
                continue
            if _UUID4_RE.match(key):            # the original's: its mtime is its last use
                end = st.st_mtime + legacy
            elif name.startswith('.tmp-'):      # made (ctime; mtime if older) by the real clock
                end = min(st.st_mtime, st.st_ctime) + self.stale_temp_age + now - time.time()
            else:
                continue
            if end < now:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._dir_fd)
                    removed += 1
        return removed


# SQLSession ##################################################################

_DIALECTS = dict(sqlite3='sqlite', psycopg='postgres', psycopg2='postgres', pg8000='postgres',
                 pgdb='postgres', MySQLdb='mysql', pymysql='mysql', mysql='mysql', mariadb='mysql')

# The statements, in qmark style; {t} is the quoted table, {data} the data
# column compared byte for byte. A column holds at least ServerSession.max_size.
_SQL = dict(
    probe='SELECT id, data, expires, user_key FROM {t} WHERE 1 = 0',
    create='CREATE TABLE {t} (id VARCHAR(64) PRIMARY KEY, data {text} NOT NULL, '
           'expires BIGINT NOT NULL, user_key VARCHAR(64))',
    add_user='ALTER TABLE {t} ADD user_key VARCHAR(64)',     # a table of bottlesession 2.0
    index_expires='CREATE INDEX {index_expires} ON {indexed} (expires)',
    index_user='CREATE INDEX {index_user} ON {indexed} (user_key)',
    select='SELECT data FROM {t} WHERE id = ? AND expires >= ?',
    swap_all="UPDATE {t} SET data = ?, expires = ?, user_key = NULLIF(?, '') "
             "WHERE id = ? AND {data} = ?",
    take='DELETE FROM {t} WHERE id = ? AND {data} = ?',
    delete='DELETE FROM {t} WHERE id = ?', purge='DELETE FROM {t} WHERE expires < ?',
    user='SELECT id, data FROM {t} WHERE user_key = ? AND expires >= ?',
    drop_expired='DELETE FROM {t} WHERE id = ? AND expires < ?',
    # Insert unless a live record is there; an expired one is replaced.
    insert='INSERT INTO {t} AS s (id, data, expires, user_key) VALUES (?, ?, ?, ?) '
           'ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires = '
           'excluded.expires, user_key = excluded.user_key WHERE s.expires < ?',
)
_SQL_DIALECT = {   # None: a driver we do not know, so no upsert; expired rows go first
    # Setting an indexed column, even to its value, costs SQLite more than the
    # rest of the update: a save that keeps the end and the user sets only data.
    'sqlite': dict(swap="UPDATE {t} SET data = ? WHERE ? = expires AND "
                        "? = COALESCE(user_key, '') AND id = ? AND {data} = ?"),
    'mysql': dict(text='MEDIUMTEXT', data='BINARY data',
        isolate='SET TRANSACTION ISOLATION LEVEL READ COMMITTED',
        widen='ALTER TABLE {t} MODIFY data MEDIUMTEXT NOT NULL',     # 2.0's TEXT held 64 KB
        insert='INSERT INTO {t} (id, data, expires, user_key) VALUES (?, ?, ?, ?) ON '
               'DUPLICATE KEY UPDATE data = IF(expires < ?, VALUES(data), data), user_key '
               '= IF(expires < ?, VALUES(user_key), user_key), expires = IF(expires < ?, '
               'VALUES(expires), expires)'),
    None: dict(insert='INSERT INTO {t} (id, data, expires, user_key) VALUES (?, ?, ?, ?)'),
}


def _sql_statements(dialect, table, style):
    """The statements in a dialect's quoting and upsert, with the driver's placeholders."""
    quote = '`%s`' if dialect == 'mysql' else '"%s"'
    if dialect == 'postgres':       # it folds unquoted names: a table made unquoted is found
        table = table.lower()
    schema, _, bare = table.rpartition('.')
    statements = dict(_SQL, **_SQL_DIALECT.get(dialect, {}))
    names = dict(text=statements.pop('text', 'TEXT'), data=statements.pop('data', 'data'),
                 t='.'.join(quote % part for part in table.split('.')))
    on_schema = quote % schema + '.' if dialect == 'sqlite' and schema else ''
    for column in ('expires', 'user'):      # SQLite puts the schema on the index
        names['index_' + column] = on_schema + quote % (table.replace('.', '_') + '_' + column)
    names['indexed'] = quote % bare if on_schema else names['t']
    mark = {'format': '%s', 'pyformat': '%s', 'numeric': ':{}', 'named': ':p{}'}.get(style, '?')
    for key, query in statements.items():
        parts = query.format(**names).split('?')
        statements[key] = parts[0] + ''.join(
            mark.format(n) + part for n, part in enumerate(parts[1:], 1))
    return statements


def _sql_failure(conn, error):
    """(lost, deadlock, timeout): whether `error` broke the connection (psycopg's closed,
    PyMySQL's and MySQLdb's open, SQLSTATE 08); made this transaction a deadlock's victim, to
    run again (40001, 40P01, MySQL's 1213); or says a wait of ours (a socket's, a statement or
    lock timeout: 57014, 55P03; 1205, 1969, 3024) ran out, not a server's for idle ones."""
    state = getattr(error, 'sqlstate', None) or getattr(error, 'pgcode', None)
    code = getattr(error, 'errno', None) or (error.args[:1] or [None])[0]
    lost = conn is not None and (getattr(conn, 'closed', False) or not getattr(conn, 'open', True)
                                 or isinstance(state, str) and state.startswith('08'))
    timeout = ('timed out' in str(error) or isinstance(error.__context__, TimeoutError)  # PyMySQL
               or state in ('57014', '55P03') or code in (1205, 1969, 3024))    # wraps an app's
    return bool(lost), state in ('40001', '40P01') or code == 1213, timeout


def _sqlite_factory(path):
    """A factory of connections to the SQLite file `path`, in a directory checked once."""
    import sqlite3      # here: a Python built without it can use the other stores
    path = os.path.abspath(os.fspath(path or os.path.join(_default_dir(), 'sessions.sqlite3')))
    directory, name = os.path.split(path)
    fd = _open_private_dir(directory, 'directory of the session database', _PLANTED_SQLITE,
                           create=directory == _default_dir())
    where = tuple(os.fstat(fd)[1:3]) + (name,)  # this file; below, a weakly held sqlite3 one
    Connection = type('Connection', (sqlite3.Connection,), {'__module__': 'sqlite3'})

    def check(make=False):  # the file's stat, checked (made first if make); None if none
        if make and not check():    # made whole under a temp name, then linked: or theirs
            _write_file(fd, name, b'', before=wal)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            return _check_private(path, st, 'session database', _PLANTED_SQLITE) or st

    def wal(temp):          # WAL only on a database we made: it changes the file for all
        with contextlib.closing(sqlite3.connect(os.path.join(directory, temp))) as made:
            made.execute('PRAGMA journal_mode=WAL')

    def connect():
        if where in _SQLITE_SHARED:
            raise SessionStoreError('%r was open in another thread when this process was forked'
                                    ': SQLite cannot share it (see the README)' % path)
        check(make=True)
        conn = sqlite3.connect(path, timeout=30, factory=Connection)
        _SQLITE_OPEN[conn] = where
        # SQLite opens by path: that must still name the file checked, in the held directory
        if not os.path.samestat(os.stat(conn.execute('PRAGMA database_list').fetchone()[2]),
                                check()):
            conn.close()
            raise SessionStoreError('%r is no longer the session database checked at start: '
                                    'a directory on its path was replaced' % path)
        if conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal':
            conn.execute('PRAGMA synchronous=NORMAL')   # durable enough with WAL
        return conn
    check(make=True)        # now: 0600 before an app's own tables share the file
    weakref.finalize(connect, os.close, fd)     # the directory's, closed with the store
    return connect


# Forks. SQLite's rule: no connection open across one, or a child's shares its locks (its writes
# were lost). This thread's close first; one another thread has open bars SQLite in the child.
_SQL_STORES, _SQLITE_OPEN, _SQLITE_SHARED = weakref.WeakSet(), weakref.WeakKeyDictionary(), set()


def _before_fork():
    for store in list(_SQL_STORES):
        store._forget(getattr(store._local, 'held', (None, None))[1])
        store._owner = not getattr(store._pool, 'closed', store._pool is None) and os.getpid()


class _Held(tuple):     # pragma: no mutate block (mutmut's tracing fails in finalizers)
    """A thread's (pid, connection), closed as the thread ends; not in a forked child (it would
    end the parent's), nor at exit (a daemon thread may be reading it: a crash)."""
    def __del__(self):      # not at a collection: sqlite3's connections are in a reference cycle
        if self[0] == os.getpid() and not sys.is_finalizing():
            with contextlib.suppress(Exception):
                self[1].close()
                del _SQLITE_OPEN[self[1]]   # closed, though a traceback may keep it a while


class SQLSession(ServerSession):
    """Keeps sessions in a SQL table, through a DB-API 2 driver.

    :param database: a pool with a ``connection()`` context manager (psycopg_pool's, say;
        one per worker, made after a fork), a function that returns a new connection, or a
        SQLite file's path (by default in the private per-user directory); not one bare connection.
    :param table: created with its indexes if missing (_SQL's create and index_* statements,
        which the README shows), unless create_table=False."""

    def __init__(self, database=None, *, table='bottlesession', cookie_expires=DEFAULT_MAX_AGE,
                 paramstyle=None, create_table=True, **options):
        super().__init__(cookie_expires, **_on_defaults(options, database in (None, '')))
        if not re.match(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z', table):
            raise ConfigError('table must be a plain SQL name, not %r' % (table,))
        if paramstyle not in (None, 'qmark', 'format', 'pyformat', 'numeric', 'named'):
            raise ConfigError('unknown DB-API paramstyle %r' % (paramstyle,))
        self.table, self.paramstyle, self.create_table = table, paramstyle, create_table
        self._pool = self._factory = self._sql = self._owner = None   # _setup() sets _sql
        if database is None or isinstance(database, (str, os.PathLike)):
            if os.fspath(database or '') == ':memory:':     # not a file named so, in the cwd
                raise ConfigError("SQLite's ':memory:' is one connection's: give a file")
            self._factory = _sqlite_factory(database)
        elif hasattr(database, 'connection'):
            if type(database).__module__.startswith('dbutils'):  # runs a failed statement again
                raise ConfigError('DBUtils splits transactions: use a factory or psycopg_pool')
            self._pool, self._owner = database, not getattr(database, 'closed', 0) and os.getpid()
        elif hasattr(database, 'cursor'):
            raise ConfigError('SQLSession takes a connection factory (lambda: psycopg.connect'
                              '(...)) or a pool, not a connection: shared, it mixes transactions')
        elif callable(database):
            self._factory = database
        else:
            raise TypeError('database must be a pool, a connection factory or a SQLite path')
        self._local = threading.local()
        _SQL_STORES.add(self)

    def _setup(self, conn):
        """Learn the driver's dialect; create the table if it is missing. Runs till it is done."""
        roots = [k.__module__.split('.')[0] for k in type(conn).__mro__]   # an app's subclass too
        driver = next((root for root in roots if root in _DIALECTS), roots[0])
        style = self.paramstyle or getattr(sys.modules.get(driver), 'paramstyle', 'qmark')
        dialect = _DIALECTS.get(driver)
        if getattr(conn, 'get_autocommit', lambda: getattr(conn, 'autocommit', 0))() is True or (
                driver == 'sqlite3' and conn.isolation_level is None):  # as each driver says
            raise SessionStoreError('the session database commits every statement (autocommit)'
                                    ': give connections that do not, so a login is one step')
        sql = _sql_statements(dialect, self.table, style)
        if self.create_table and (unread := self._try(conn, sql['probe'])):
            work = ['create', 'index_expires', 'index_user']
            if not self._try(conn, sql['add_user']):    # bottlesession 2.0's table
                work = ['index_user', 'widen']
            for name in work:
                error = name in sql and self._try(conn, sql[name])
                if error and self._try(conn, sql['probe']):    # not a race another process won
                    raise SessionStoreError('cannot read the session table %s (%s), nor make it '
                                            '(%s): fix that, or make it as the README shows and '
                                            'pass create_table=False' % (self.table, unread, error))
        self._style, self._dialect, self._sql = style, dialect, sql

    @staticmethod
    def _try(conn, statement):
        """Run one statement in a transaction of its own; None, or its error."""
        with contextlib.closing(conn.cursor()) as cur:
            try:
                cur.execute(statement)
                conn.commit()
            except Exception as exc:
                lost, _, timeout = _sql_failure(conn, exc)
                if lost or timeout or not SQLSession._db_error(exc):  # no missing table
                    raise
                conn.rollback()
                return exc

    def _execute(self, cur, name, *values):
        """Run statement `name` with `values` in the driver's paramstyle; return the cursor."""
        if self._style == 'named':
            values = {'p%d' % n: v for n, v in enumerate(values, 1)}
        cur.execute(self._sql[name], values)
        return cur

    def _connection(self):
        """This thread's connection, made in this process."""
        pid, conn = getattr(self._local, 'held', (None, None))
        if pid != os.getpid():          # a forked parent's is never used (see _before_fork)
            conn = self._factory()
            self._local.held = _Held((os.getpid(), conn))
        return conn

    def _forget(self, conn):    # closed, as it cannot be used again: the thread makes another
        if getattr(self._local, 'held', (None, None))[1] is conn:
            self._local.held = None, None       # _Held closes it

    def _run(self, work):
        """Run work(cursor) in one transaction. Failing to connect, or a driver's error (PEP 249
        kinds), is a SessionStoreError. A lost connection runs again on a new one, once (a pool's,
        till one is whole); a deadlock's victim too; 2 s at most (PostgreSQL sees one in 1 s)."""
        started = time.monotonic()
        for attempt in range(100):
            conn = None
            try:
                if self._pool is None:
                    return self._transaction(conn := self._connection(), work)
                self._owner = self._owner or os.getpid()   # the process where the pool was
                if self._owner != os.getpid():      # open when built, at a fork, or first used
                    raise SessionStoreError('pool opened before the fork: open it in each worker')
                with self._pool.connection() as conn:
                    return self._transaction(conn, work)
            except SessionStoreError:
                raise
            except Exception as exc:    # on a connection, the app's (its deadline, say) as raised
                if conn is not None and not self._db_error(exc):
                    raise
                lost, deadlock, timeout = _sql_failure(conn, exc)
                if lost:
                    self._forget(conn)
                drain = lost and not timeout and (self._pool is not None or not attempt)
                if not ((deadlock or drain) and attempt < 99 and time.monotonic() - started < 2):
                    raise SessionStoreError('session database failed: %s' % exc) from exc

    def _transaction(self, conn, work):
        try:
            if self._sql is None:   # not under a lock: requests would queue behind a slow one
                self._setup(conn)
            with contextlib.closing(conn.cursor()) as cur:
                result = work(cur)
            conn.commit()
            return result
        except BaseException as exc:
            try:    # cut mid-statement by the app's deadline, say: in no state to roll back
                conn.rollback() if self._db_error(exc) else self._forget(conn)
            except Exception:
                self._forget(conn)      # in no state to be used again
            raise

    _db_error = staticmethod(lambda exc: any(k.__name__ in ('DatabaseError', 'InterfaceError')
                                             for k in type(exc).__mro__))  # PEP 249's kinds
    _row = staticmethod(lambda row: row and tuple(  # a tuple of str, from an app's dicts, bytes
        v.decode() if hasattr(v, 'decode') else v for v in getattr(row, 'values', lambda: row)()))
    _one = lambda self, cur, key: (row := self._row(self._execute(   # its blob, or None
        cur, 'select', key, int(self.now())).fetchone())) and row[0]
    read = lambda self, key: self._run(lambda cur: self._one(cur, key))
    remove = lambda self, key: self._run(lambda c: self._execute(c, 'delete', key).rowcount) > 0

    def write(self, key, blob, expires, expected=None, replaces=None, user=None):
        def store(cur):
            if expected is not None and not replaces:
                for name in ('swap', 'swap_all'):
                    if name in self._sql and self._execute(
                            cur, name, blob, expires, user or '', key, expected).rowcount == 1:
                        return True
            elif expected is None or self._execute(cur, 'take', replaces, expected).rowcount == 1:
                now = int(self.now())
                if self._dialect is None:       # no upsert: an expired row goes first
                    self._execute(cur, 'drop_expired', key, now)
                self._execute(cur, 'insert', key, blob, expires, user,
                              *[now] * self._sql['insert'].count('expires <'))
            # Written, or a retry that had landed? Not rowcount: MySQL's is 0 for a row unchanged.
            return self._one(cur, key) == blob
        return self._run(store)

    def user_records(self, user):
        return self._run(lambda cur: [self._row(row) for row in self._execute(
            cur, 'user', user, int(self.now())).fetchall()])

    def purge(self, now):
        def sweep(cur):     # MySQL: without gap locks, a sweep seldom deadlocks saves
            if 'isolate' in self._sql:
                self._execute(cur, 'isolate')
            return self._execute(cur, 'purge', int(now)).rowcount
        return self._run(sweep)


# RedisSession ################################################################

class RedisSession(ServerSession):
    """Keeps sessions in Redis, through a redis-py compatible client you pass in.

    :param client: ``redis.Redis(...)`` or ``redis.RedisCluster(...)``, with a socket_timeout
        and no retries of its own: a stalled Redis then holds a request a bounded time."""

    def __init__(self, client, *, prefix='bottlesession:', cookie_expires=DEFAULT_MAX_AGE,
                 **options):
        super().__init__(cookie_expires, cleanup_chance=0, **options)  # Redis drops them at TTL
        if not all(hasattr(client, n) for n in ('get', 'set', 'delete', 'register_script')):
            raise TypeError('client must be a redis-py compatible client')
        if not isinstance(prefix, str):
            raise TypeError('prefix must be a str, not %r' % (prefix,))
        self.client, self.prefix = client, prefix
        # Scripts run atomically, by EVALSHA; a cluster runs one over one node's keys only:
        # there a login writes the new key, deletes the old one, then updates the user's index.
        self._swap_script = client.register_script(self._SWAP)
        self._index_script = client.register_script(self._INDEX + ' return 1')
        self._cluster = hasattr(client, 'get_nodes')

    # A user's index, the last key, gains the session ARGV[4] (and loses ARGV[5],
    # the key it moved from) and lives as long as its longest session (ARGV[3] s).
    _INDEX = """
        redis.call('SREM', KEYS[#KEYS], ARGV[5])
        redis.call('SADD', KEYS[#KEYS], ARGV[4])
        if redis.call('TTL', KEYS[#KEYS]) < tonumber(ARGV[3]) then
            redis.call('EXPIRE', KEYS[#KEYS], ARGV[3]) end"""

    # Compare and set: only if KEYS[2] (a login's old key, deleted here, or
    # KEYS[1]) holds ARGV[1] (or nothing, if empty), write ARGV[2] to KEYS[1]
    # (or delete it, if empty); with a third key, the index, in the same step.
    _SWAP = """
        local expected = ARGV[1] ~= '' and ARGV[1]     -- false, as GET gives for no key
        if redis.call('GET', KEYS[2]) ~= expected then return 0 end
        if KEYS[2] ~= KEYS[1] then redis.call('DEL', KEYS[2]) end
        if ARGV[2] == '' then redis.call('DEL', KEYS[1])
        else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
        if #KEYS == 3 then""" + _INDEX + """ end
        return 1"""

    def _call(self, work):
        try:
            return work()
        except Exception as exc:    # redis-py's errors; the module is not imported
            raise SessionStoreError('session store (Redis) failed: %s' % exc) from exc

    dumps = lambda self, record: _to_json(record).encode('ascii')   # as redis-py reads them back
    read = lambda self, key: self._call(lambda: self.client.get(self.prefix + key))
    remove = lambda self, key: bool(self._call(lambda: self.client.delete(self.prefix + key)))

    def write(self, key, blob, expires, expected=None, replaces=None, user=None):
        ttl, name = max(1, math.ceil(expires - self.now())), self.prefix + key
        def store():
            args = [expected or '', blob, ttl, key, replaces or '']
            if not self._cluster:
                index = [self.prefix + user] if user else []
                return bool(self._swap_script(
                    keys=[name, self.prefix + (replaces or key)] + index, args=args))
            if replaces:    # the new key first: a failure before the old goes loses nothing
                old, done = self.prefix + replaces, self.client.set(name, blob, ex=ttl)
                if done and not self._swap_script(keys=[old, old], args=[expected or '', '', 0]):
                    done = self.client.delete(name) and False   # the old moved on: merge, retry
            else:
                done = self._swap_script(keys=[name, name], args=args)
            if done and user:
                self._index_script(keys=[self.prefix + user], args=args)
            return bool(done)
        return self._call(store)

    def user_records(self, user):
        def members():
            index, found = self.prefix + user, []
            for key in self.client.smembers(index):
                key = key.decode('ascii') if isinstance(key, bytes) else key
                blob = self.client.get(self.prefix + key)
                if blob is None:
                    self.client.srem(index, key)    # expired since: forget it
                else:
                    found.append((key, blob))
            return found
        return self._call(members)

    purge = staticmethod(lambda now: 0)     # Redis drops each record at its TTL


###############################################################################
# 7. Passwords ################################################################
###############################################################################

# scrypt's cost as (log2 N, r, p): OWASP's minimum. Raise it, and needs_rehash()
# says which hashes to redo; lower it in tests only, no further than the floor.
SCRYPT_PARAMETERS = _SCRYPT_DEFAULT = (17, 8, 1)     # the default bounds planted hashes in tests
_SCRYPT_FLOOR = (14, 8, 1)      # the least made or accepted: the scrypt paper's for logins, 16 MiB
_SCRYPT_MAXMEM = 2 ** 31 - 2            # hashlib's limit on maxmem
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
_SCRYPT_SLOTS = threading.BoundedSemaphore(_CPUS)   # each run takes its memory: one per CPU
if hasattr(os, 'register_at_fork'):     # a lock another thread held at a fork stays held
    os.register_at_fork(before=_before_fork, after_in_child=lambda: globals().update(  # there
        _SCRYPT_SLOTS=threading.BoundedSemaphore(_CPUS), _LIMITS_LOCK=threading.Lock(),
        _SQLITE_SHARED=_SQLITE_SHARED | set(_SQLITE_OPEN.values())))
# Salt (16 bytes) and key (32) in full: a column too narrow would cut a hash
# short, and scrypt's shorter output is a prefix of the full one. Both always decode.
_HASH_RE = re.compile(r'scrypt\$([1-9][0-9]?)\$([1-9][0-9]{0,2})\$([1-9][0-9]{0,2})'
                      r'\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{43})\Z')
# A refused hash or a missing user is checked against these: the same work, timed alike.
_DECOY_SALT, _DECOY_KEY = bytes(16), bytes(32)


def _scrypt_cost(log_n, r, p):
    """The memory (bytes, as OpenSSL counts it) and work (N*r*p) of scrypt."""
    n = 1 << log_n
    return 128 * r * (n + p + 2), n * r * p


def _scrypt_parameters():
    """SCRYPT_PARAMETERS, checked: a ConfigError rather than a weak hash."""
    value = SCRYPT_PARAMETERS
    if not (isinstance(value, (tuple, list)) and len(value) == 3
            and all(type(part) is int for part in value)):
        raise ConfigError('SCRYPT_PARAMETERS is (log2 N, r, p), three ints, not %r' % (value,))
    log_n, r, p = value = tuple(value)      # log_n first: 1 << 10**9 is itself costly
    if any(part < least for part, least in zip(value, _SCRYPT_FLOOR)):
        raise ConfigError('SCRYPT_PARAMETERS %r is below the floor %r, even in tests'
                          % (value, _SCRYPT_FLOOR))
    if log_n > 24 or r > 999 or p > 999 or _scrypt_cost(*value)[0] + 65536 > _SCRYPT_MAXMEM:
        raise ConfigError('SCRYPT_PARAMETERS %r needs over 2 GiB, or r or p over 999' % (value,))
    return value


def _password_bytes(password):
    if isinstance(password, str):       # 'surrogatepass': a lone surrogate from JSON
        return password.encode('utf-8', 'surrogatepass')
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    raise TypeError('a password is a str or bytes, not %s' % type(password).__name__)


def _scrypt(secret, salt, log_n, r, p):
    with _SCRYPT_SLOTS:     # more at once would not be faster, only larger (CPU-bound)
        return hashlib.scrypt(secret, salt=salt, n=1 << log_n, r=r, p=p,
                              maxmem=_scrypt_cost(log_n, r, p)[0] + 65536, dklen=32)


def _parse_hash(hashed, current):
    """(log_n, r, p, salt, key) of a hash not below the floor, nor over twice the memory
    or 8 times the work of `current` (or the default) lest it cost minutes; or None."""
    if not (match := isinstance(hashed, str) and _HASH_RE.match(hashed)):
        return None
    log_n, r, p = (int(group) for group in match.groups()[:3])
    memory, work = _scrypt_cost(log_n, r, p)
    most_memory, most_work = map(max, _scrypt_cost(*current), _scrypt_cost(*_SCRYPT_DEFAULT))
    below = any(part < least for part, least in zip((log_n, r, p), _SCRYPT_FLOOR))
    if below or memory > 2 * most_memory or work > 8 * most_work:
        return None
    salt, key = (_b64decode(part.encode()) for part in match.groups()[3:])
    return log_n, r, p, salt, key


def hash_password(password):
    """Hash a password (str or bytes) with scrypt at SCRYPT_PARAMETERS and a random salt;
    128 MiB and a few tenths of a second on purpose, as does check_password(): rate-limit
    logins. The str carries its parameters::

        scrypt$<log2 N>$<r>$<p>$<salt, 22 base64url>$<hash, 43 base64url>"""
    log_n, r, p = _scrypt_parameters()
    salt = secrets.token_bytes(16)
    key = _scrypt(_password_bytes(password), salt, log_n, r, p)
    return 'scrypt$%d$%d$%d$%s$%s' % (log_n, r, p, *(_b64encode(b).decode() for b in (salt, key)))


def check_password(password, hashed):
    """True if `password` matches `hashed`, a hash_password() string. For None (no such
    user, as in check_password(password, USERS.get(name))): False, after the same work, so
    the time does not tell who has an account."""
    parsed = _parse_hash(hashed, current := _scrypt_parameters())
    try:
        secret = _password_bytes(password)
    except TypeError:
        secret, parsed = b'', None
    log_n, r, p, salt, key = parsed or current + (_DECOY_SALT, _DECOY_KEY)
    try:
        derived = _scrypt(secret, salt, log_n, r, p)
    except ValueError:                  # OpenSSL refused: out of memory
        return False
    return hmac.compare_digest(derived, key) and parsed is not None


def needs_rehash(hashed):
    """True when `hashed` is weaker than hash_password() makes today, or not
    one check_password() accepts: store a new hash at the next good login."""
    parsed = _parse_hash(hashed, current := _scrypt_parameters())
    return parsed is None or any(part < want for part, want in zip(parsed[:3], current))
