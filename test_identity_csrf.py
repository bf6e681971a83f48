"""Tests for issue 16 (who is signed in: login(), the current user, logging out
everywhere, throttling, passwords, flash) and issue 17 (CSRF: Sec-Fetch-Site
and Origin first, the token as the fallback), written from the two issues.

They reuse the servers, store factory and browser helpers of
test_bottlesession.py. Every request goes through a full WSGI cycle.
"""
import base64
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import bottle
import pytest
import webtest

import bottlesession as bs
from test_bottlesession import (  # noqa: F401  (fixtures are used by name)
    SECRET, SERVER_STORES, STORES, Clock, RequestLog, ServedApp, browser, browser_steps,
    build_store, count_records, in_threads, kind, kinds, make_manager, mariadb_server,
    missing, postgres_server, redis_server, report, server_address, set_cookie_headers,
    slow, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))


###############################################################################
# Helpers #####################################################################
###############################################################################

def b64(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip('=')


def wsgi_call(app, method, path, cookie=None, headers=(), body=b''):
    """One request through the WSGI interface, from any thread: (status, headers, body)."""
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path, 'QUERY_STRING': '',
               'SERVER_NAME': 'localhost', 'SERVER_PORT': '80', 'HTTP_HOST': 'localhost',
               'wsgi.url_scheme': 'http', 'wsgi.input': io.BytesIO(body),
               'CONTENT_LENGTH': str(len(body)), 'wsgi.errors': sys.stderr}
    if cookie:
        environ['HTTP_COOKIE'] = cookie
    for name, value in dict(headers).items():
        environ['HTTP_' + name.upper().replace('-', '_')] = value
    got = {}

    def start_response(status, response_headers, exc_info=None):
        got['status'], got['headers'] = status, response_headers
    data = b''.join(app(environ, start_response))
    return got['status'], got['headers'], data.decode()


def apply_set_cookies(jar, headers):
    """What a browser's cookie jar does with a response's Set-Cookie headers."""
    for name, value in headers:
        if name.lower() != 'set-cookie':
            continue
        pair, _, attrs = value.partition(';')
        key, _, val = pair.strip().partition('=')
        if re.search(r'max-age=0\b', attrs, re.I) or (not val and 'expires=' in attrs.lower()):
            jar.pop(key, None)
        else:
            jar[key] = val
    return jar


def cookie_header(jar):
    return '; '.join('%s=%s' % item for item in jar.items())


def as_cookie(manager, value):
    return {'Cookie': '%s=%s' % (manager.cookie_name, value)}


def token_for(secret_b64):
    """A token for a CSRF secret, masked as the module does today (Django's way)."""
    raw = base64.urlsafe_b64decode(secret_b64 + '=' * (-len(secret_b64) % 4))
    mask = os.urandom(len(raw))
    return b64(mask + bytes(a ^ b for a, b in zip(mask, raw)))


def cookie_payload(value):
    """The JSON a CookieSession cookie carries, decoded without the module."""
    payload = value.rsplit('.', 2)[0]
    if payload.startswith('.'):
        import zlib
        return zlib.decompress(base64.urlsafe_b64decode(payload[1:] + '==')).decode()
    return base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)).decode()


def raw_store(manager, kind, request, tag):
    """Everything the store holds, read around the module: files, every table
    of the test's name, every Redis key of its prefix; as one str."""
    parts = []
    if kind == 'cookie':
        return ''
    if kind == 'pickle':
        for root, _, files in os.walk(manager.session_dir):
            for name in files:
                parts.append(name)
                with open(os.path.join(root, name), 'rb') as f:
                    parts.append(f.read().decode('latin-1'))
    elif kind == 'sqlite':
        with sqlite3.connect(manager_path(manager)) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                parts.extend(repr(row) for row in conn.execute('SELECT * FROM "%s"' % table))
    elif kind in ('postgres', 'mariadb'):
        server = request.getfixturevalue(kind + '_server')
        with server.connect() as conn:
            cur = conn.cursor()
            cur.execute("SELECT table_name FROM information_schema.tables WHERE "
                        "LOWER(table_name) LIKE %s", ('s_%s%%' % tag.lower(),))
            for (table,) in cur.fetchall():
                cur.execute('SELECT * FROM %s' % table)
                parts.extend(repr(row) for row in cur.fetchall())
    elif kind == 'redis':
        client = request.getfixturevalue('redis_server').client()
        for key in client.keys('t%s:*' % tag):
            parts.append(key.decode('latin-1'))
            kind_of = client.type(key).decode()
            value = {'string': client.get, 'hash': client.hgetall, 'set': client.smembers,
                     'zset': lambda k: client.zrange(k, 0, -1, withscores=True),
                     'list': lambda k: client.lrange(k, 0, -1)}.get(kind_of, repr)(key)
            parts.append(repr(value))
    return '\n'.join(parts)


def manager_path(manager):
    return manager._sqlite_path


def tagged_manager(kind, request, tmp_path, **options):
    """make_manager with a tag we know (for raw_store); SQLite at a known path."""
    tag = uuid.uuid4().hex[:10]
    manager = make_manager(kind, request, tmp_path, tag=tag, **options)
    manager._sqlite_path = str(tmp_path / 'sessions.db')
    return manager, tag


def ident_app(manager, users=None, **plugin_options):
    """A small app on login(): users is {id: {'name': ..., 'pw': ...}} for load_user."""
    app = bottle.Bottle()
    if users is not None:
        plugin_options.setdefault('load_user', users.get)
    app.install(bs.SessionPlugin(manager, **plugin_options))
    valid_user = bs.authenticator(manager, login_url='/login-page')

    def uid(text):
        return int(text) if text.isdigit() else text

    @app.route('/login/<user_id>')
    def login(user_id, session):
        session.login(uid(user_id))
        return {'id': session.id}

    @app.route('/login-post/<user_id>', method='POST', session={'csrf': False})
    def login_post(user_id, session):
        session.login(uid(user_id))
        return 'in'

    @app.route('/legacy/<name>')
    def legacy(name, session):
        session['valid'] = True
        session['name'] = name
        return 'in'

    @app.route('/legacy-valid')
    def legacy_valid(session):
        session['valid'] = True
        return 'in'

    @app.route('/regenerate')
    def regenerate(session):
        session.regenerate()
        return 'ok'

    @app.route('/logout')
    def logout(session):
        session.logout()
        return 'bye'

    @app.route('/whoami')
    def whoami(session):
        return {'user_id': session.user_id, 'valid': bool(session.get('valid')),
                'login_time': session.login_time, 'id': session.id,
                'data': {k: session.get(k) for k in ('a', 'b', 'cart', 'mine') if k in session}}

    @app.route('/set/<key>/<value>')
    def set_(key, value, session):
        session[key] = value
        return 'ok'

    @app.route('/del/<key>')
    def del_(key, session):
        session.pop(key, None)
        return 'ok'

    @app.route('/form')
    def form(session):
        return session.csrf_token()

    @app.route('/post', method='POST')
    def post(session):
        session['posted'] = True
        return 'posted'

    @app.route('/private')
    @valid_user()
    def private():
        return 'private'
    app.catchall = True
    return app


def redirected(response):
    return response.status_int in (302, 303)


###############################################################################
# Identity: login(), logout(), user_id, login_time ############################
###############################################################################

def test_login_logout_user_id_and_login_time(kind, request, tmp_path):
    """login() signs in (valid=True, user_id, login_time); logout() ends it, no-store."""
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(ident_app(manager))
    before = app.get('/whoami').json
    assert before['user_id'] is None and before['login_time'] is None
    app.get('/login/alice')
    me = app.get('/whoami').json
    assert me['user_id'] == 'alice' and me['valid'] is True
    assert abs(me['login_time'] - manager.now()) <= 1
    assert app.get('/private').text == 'private'
    manager.now.advance(100)
    app.get('/login/7')                         # an int stays an int
    me = app.get('/whoami').json
    assert me['user_id'] == 7 and abs(me['login_time'] - manager.now()) <= 1
    response = app.get('/logout')
    assert 'no-store' in response.headers.get('Cache-Control', '')
    me = app.get('/whoami').json
    assert me['user_id'] is None and me['valid'] is False and me['login_time'] is None
    assert redirected(app.get('/private'))


@pytest.mark.parametrize('how', ['login', 'legacy', 'legacy-valid'])
def test_every_way_of_signing_in_rotates_the_id(kind, how, request, tmp_path):
    """Fixation: an id the attacker planted is never the signed-in one."""
    manager = make_manager(kind, request, tmp_path)
    app = ident_app(manager)
    attacker = webtest.TestApp(app)
    attacker.get('/set/a/1')                            # a stored, anonymous session
    planted = attacker.cookies[manager.cookie_name]
    planted_id = attacker.get('/whoami').json['id']
    victim = webtest.TestApp(app)
    response = victim.get({'login': '/login/alice', 'legacy': '/legacy/alice',
                           'legacy-valid': '/legacy-valid'}[how],
                          headers=as_cookie(manager, planted))
    [new] = [h.split(';')[0].split('=', 1)[1] for h in set_cookie_headers(response)
             if h.startswith(manager.cookie_name + '=')]     # the browser's jar replaces it
    me = victim.get('/whoami', headers=as_cookie(manager, new)).json
    assert me['valid'] is True and me['id'] != planted_id
    assert me['data'] == {'a': '1'}                     # the data goes along
    assert me['login_time'] is not None                 # a legacy login is a login too
    replay = attacker.get('/whoami', headers=as_cookie(manager, planted)).json
    assert replay['valid'] is False and replay['user_id'] is None
    if kind != 'cookie':                                # the old id is gone on the server
        assert replay['id'] != planted_id and replay['data'] == {}


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_a_changed_user_is_a_new_id(kind, request, tmp_path):
    """login(bob) on alice's session rotates the id again; her copy is dead."""
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(ident_app(manager))
    app.get('/login/alice')
    alices = app.cookies[manager.cookie_name]
    app.get('/login/bob')
    assert app.cookies[manager.cookie_name] != alices
    assert app.get('/whoami').json['user_id'] == 'bob'
    replay = webtest.TestApp(app.app).get('/whoami', headers=as_cookie(manager, alices)).json
    assert replay['user_id'] is None


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_login_rotation_keeps_what_another_request_saved_meanwhile(kind, request, tmp_path):
    """login() under the compare-and-set save: a key set by another request while
    the login ran is kept, and a key deleted there stays deleted."""
    manager = make_manager(kind, request, tmp_path)
    app = ident_app(manager)
    loaded, done = threading.Event(), threading.Event()

    @app.route('/slow-login')
    def slow_login(session):
        session.get('a')
        loaded.set()
        done.wait(30)               # the other request saves meanwhile
        session['mine'] = 'kept'
        session.login('alice')
        return 'in'
    test = webtest.TestApp(app)
    test.get('/set/a/1')
    cookie = '%s=%s' % (manager.cookie_name, test.cookies[manager.cookie_name])

    def other():
        loaded.wait(30)
        wsgi_call(app, 'GET', '/set/b/2', cookie)
        result = wsgi_call(app, 'GET', '/del/a', cookie)
        done.set()
        return result
    (status, headers, _), _ = in_threads(
        functools.partial(wsgi_call, app, 'GET', '/slow-login', cookie), other)
    assert status == '200 OK'
    jar = apply_set_cookies({manager.cookie_name: cookie.split('=', 1)[1]}, headers)
    me = webtest.TestApp(app).get('/whoami', headers={'Cookie': cookie_header(jar)}).json
    assert me['user_id'] == 'alice'
    assert me['data'] == {'b': '2', 'mine': 'kept'}     # b kept, a stays deleted
    replay = webtest.TestApp(app).get('/whoami', headers={'Cookie': cookie}).json
    assert replay['user_id'] is None                    # the old id is dead


@pytest.mark.parametrize('order', ['first-answer-last', 'second-answer-last'])
def test_a_double_submitted_login_form_leaves_the_user_signed_in(kind, order, request,
                                                                  tmp_path):
    """Two login POSTs from one browser, both sent with the pre-login cookie and
    both loaded before either saved; whichever answer the browser applies last,
    it is signed in."""
    manager = make_manager(kind, request, tmp_path)
    app = ident_app(manager)
    barrier = threading.Barrier(2, timeout=30)

    @app.route('/login-form', method='POST', session={'csrf': False})
    def login_form(session):
        session.get('a')
        barrier.wait()
        session.login('alice')
        return 'in'
    test = webtest.TestApp(app)
    test.get('/set/a/1')
    old = test.cookies[manager.cookie_name]
    cookie = '%s=%s' % (manager.cookie_name, old)
    results = in_threads(*[functools.partial(wsgi_call, app, 'POST', '/login-form', cookie)
                           for _ in range(2)])
    assert [status for status, _, _ in results] == ['200 OK'] * 2
    if order == 'second-answer-last':
        results.reverse()
    jar = {manager.cookie_name: old}
    for _, headers, _ in results:
        apply_set_cookies(jar, headers)
    assert manager.cookie_name in jar, 'the browser was left without a session cookie'
    me = webtest.TestApp(app).get('/whoami', headers={'Cookie': cookie_header(jar)}).json
    assert me['user_id'] == 'alice' and me['valid'] is True


def test_logout_ends_the_session_on_the_server(kind, request, tmp_path):
    """logout() is invalidate(): the old cookie is worthless on a server store."""
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(ident_app(manager))
    app.get('/login/alice')
    cookie = app.cookies[manager.cookie_name]
    response = app.get('/logout')
    assert 'no-store' in response.headers['Cache-Control']
    assert any(h.startswith(manager.cookie_name + '=') for h in set_cookie_headers(response))
    assert app.get('/whoami').json['user_id'] is None
    if kind != 'cookie':
        replay = webtest.TestApp(app.app).get('/whoami', headers=as_cookie(manager, cookie))
        assert replay.json['user_id'] is None
        assert manager.read(manager.storage_key(cookie)) is None


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_the_store_never_holds_the_raw_session_id(kind, request, tmp_path):
    """A copy of the store (sessions and the user index) holds no cookie value;
    original-API code still reads session['sessionid'] in memory."""
    manager, tag = tagged_manager(kind, request, tmp_path)
    app = ident_app(manager)

    @app.route('/sessionid')
    def sessionid(session):
        return session['sessionid']
    test = webtest.TestApp(app)
    test.get('/set/a/1')
    anonymous = test.cookies[manager.cookie_name]
    assert test.get('/sessionid').text == anonymous
    test.get('/login/alice')
    signed_in = test.cookies[manager.cookie_name]
    assert test.get('/sessionid').text == signed_in
    dump = raw_store(manager, kind, request, tag)
    assert dump, 'nothing found in the store: the dump is looking in the wrong place'
    assert signed_in not in dump and anonymous not in dump


###############################################################################
# The current user: load_user #################################################
###############################################################################

USERS = {7: {'name': 'alice', 'pw': 'v1'}, 8: {'name': 'bob', 'pw': 'v1'}}


def current_user_app(manager, users, calls, **options):
    def load_user(user_id):
        calls.append(user_id)
        return users.get(user_id)
    app = ident_app(manager, load_user=load_user, **options)
    valid_user = bs.authenticator(manager, login_url='/login-page')

    @app.route('/plain')
    def plain():
        return 'plain'

    @app.route('/session-only')
    def session_only(session):
        return '%s %s' % (session.user_id, session.get('valid'))

    @app.route('/by-param')
    def by_param(user):
        return user['name'] if user else 'nobody'

    @app.route('/by-current')
    def by_current():
        first, second = bs.current_user(), bs.current_user()
        assert first is second
        return first['name'] if first else 'nobody'

    @app.route('/by-valid-user')
    @valid_user()
    def by_valid_user():
        return 'ok'

    @app.route('/all-three')
    @valid_user()
    def all_three(user, session):
        assert bs.current_user() is user
        return user['name']
    return app


def test_load_user_only_when_asked_and_at_most_once(kind, request, tmp_path):
    """load_user runs once for each request that asks (param, current_user(),
    valid_user, or all three), never for one that does not, nor for a visitor."""
    calls = []
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(current_user_app(manager, dict(USERS), calls))
    assert app.get('/by-param').text == 'nobody'
    assert app.get('/by-current').text == 'nobody'
    assert calls == []                              # a visitor: nobody to load
    app.get('/login/7')
    del calls[:]
    for path in ('/plain', '/session-only', '/whoami', '/form'):
        app.get(path)
        assert calls == [], path
    assert app.get('/session-only').text == '7 True'
    for path, body in (('/by-param', 'alice'), ('/by-current', 'alice'),
                       ('/by-valid-user', 'ok'), ('/all-three', 'alice')):
        del calls[:]
        assert app.get(path).text == body
        assert calls == [7], path


@pytest.mark.parametrize('way', ['param', 'current_user', 'valid_user'])
def test_a_user_that_no_longer_exists_is_logged_out(kind, way, request, tmp_path):
    """load_user returning None logs the session out, whichever way asked."""
    users, calls = dict(USERS), []
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(current_user_app(manager, users, calls))
    app.get('/login/7')
    cookie = app.cookies[manager.cookie_name]
    assert app.get('/by-param').text == 'alice'
    del users[7]                                    # the account is deleted
    response = app.get({'param': '/by-param', 'current_user': '/by-current',
                        'valid_user': '/by-valid-user'}[way])
    if way == 'valid_user':
        assert redirected(response)
    else:
        assert response.text == 'nobody'
    me = app.get('/whoami').json
    assert me['user_id'] is None and me['valid'] is False
    if kind != 'cookie':
        replay = webtest.TestApp(app.app).get('/whoami', headers=as_cookie(manager, cookie))
        assert replay.json['user_id'] is None
    users[7] = USERS[7]                             # it does not come back by itself
    assert app.get('/by-param').text == 'nobody'


###############################################################################
# Log out everywhere: user_version, user_sessions, end_sessions ###############
###############################################################################

VERSION_1 = 'pwhash-Zq8SECRETVERSIONx1'
VERSION_2 = 'pwhash-Zq8SECRETVERSIONx2'


def version_app(manager, users):
    app = ident_app(manager, users=users, user_version=lambda user: user['pw'])

    @app.route('/me')
    def me(user):
        return user['name'] if user else 'nobody'

    @app.route('/change-password/<new>')
    def change_password(new, session, user):
        user['pw'] = new
        session.login(session.user_id)              # this device stays signed in
        return 'changed'
    return app


def test_user_version_logs_out_every_other_session(kind, request, tmp_path):
    """A password change ends the user's other sessions on their next request
    that loads the user, in every store, the cookie store too; this device
    stays in; the version string is never stored."""
    users = {7: {'name': 'alice', 'pw': VERSION_1}, 8: {'name': 'bob', 'pw': VERSION_1}}
    manager, tag = tagged_manager(kind, request, tmp_path)
    app = version_app(manager, users)
    laptop, phone, tablet, bob = (webtest.TestApp(app) for _ in range(4))
    for device in (laptop, phone, tablet):
        device.get('/login/7')
        assert device.get('/me').text == 'alice'
    bob.get('/login/8')
    stored = raw_store(manager, kind, request, tag) if kind != 'cookie' else \
        cookie_payload(laptop.cookies[manager.cookie_name])
    digest = hashlib.sha256(VERSION_1.encode()).hexdigest()
    assert VERSION_1 not in stored and digest not in stored     # a keyed hash, not the string
    assert laptop.get('/change-password/' + VERSION_2).text == 'changed'
    assert laptop.get('/me').text == 'alice'
    assert phone.get('/me').text == 'nobody'                    # the user param asked
    assert phone.get('/whoami').json['user_id'] is None
    assert redirected(tablet.get('/private'))                   # valid_user asked
    assert tablet.get('/whoami').json['user_id'] is None
    assert bob.get('/me').text == 'bob'                         # another user: untouched
    users[7]['pw'] = 'counter-bumped-3'                         # the app bumps a counter
    assert laptop.get('/me').text == 'nobody'


def test_user_version_is_checked_only_where_the_user_is_loaded(tmp_path):
    """A route that never asks for the user neither loads it nor logs out."""
    users = {7: {'name': 'alice', 'pw': VERSION_1}}
    manager = bs.CookieSession(secret=SECRET)
    app = webtest.TestApp(version_app(manager, users))
    app.get('/login/7')
    users[7]['pw'] = VERSION_2
    assert app.get('/whoami').json['user_id'] == 7     # nothing asked for the user
    assert app.get('/me').text == 'nobody'
    assert app.get('/whoami').json['user_id'] is None


def sessions_app(manager):
    app = ident_app(manager)

    @app.route('/end-others')
    def end_others(session):
        return str(manager.end_sessions(session.user_id, keep=session))
    return app


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_user_sessions_lists_and_end_sessions_ends_them(kind, request, tmp_path):
    """user_sessions(): one dict per live session of that user (created, accessed,
    expires, a key that is not a cookie); end_sessions(keep=) ends the others
    and counts them; other users and logged-out or rotated sessions are left out."""
    manager = make_manager(kind, request, tmp_path)
    app = sessions_app(manager)
    laptop, phone, tablet, spare, bob, visitor = (webtest.TestApp(app) for _ in range(6))
    for device in (laptop, phone, tablet, spare):
        device.get('/login/alice')
    bob.get('/login/bob')
    visitor.get('/set/a/1')
    tablet.get('/login/alice')                      # signed in again: a new id
    spare.get('/logout')
    manager.now.advance(10)
    phone.get('/set/a/2')                           # used later than the others
    listed = manager.user_sessions('alice')
    assert isinstance(listed, list) and len(listed) == 3
    now = manager.now()
    for entry in listed:
        assert {'created', 'accessed', 'expires', 'key'} <= set(entry)
        assert now - 60 < entry['created'] <= entry['accessed'] <= now + 1
        assert now < entry['expires'] <= now + manager.max_age + 60
    assert sorted(e['accessed'] for e in listed)[-1] >= now - 1
    keys = [str(e['key']) for e in listed]
    assert len(set(keys)) == 3
    cookies = {d.cookies[manager.cookie_name] for d in (laptop, phone, tablet)}
    assert not set(keys) & cookies
    for key in keys:                                # a key is not a cookie
        thief = webtest.TestApp(app).get('/whoami', headers=as_cookie(manager, key)).json
        assert thief['user_id'] is None
    assert laptop.get('/end-others').text == '2'
    assert laptop.get('/whoami').json['user_id'] == 'alice'
    for device in (phone, tablet):
        assert device.get('/whoami').json['user_id'] is None
    assert bob.get('/whoami').json['user_id'] == 'bob'
    assert visitor.get('/whoami').json['data'] == {'a': '1'}
    assert len(manager.user_sessions('alice')) == 1
    assert len(manager.user_sessions('bob')) == 1 and manager.user_sessions('carol') == []
    assert manager.end_sessions('alice') == 1       # outside a request: all of them
    assert laptop.get('/whoami').json['user_id'] is None
    assert manager.user_sessions('alice') == []


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_user_sessions_with_int_ids_and_expired_sessions(kind, request, tmp_path):
    """An int user id works as a str one does; an expired session is not listed."""
    manager = make_manager(kind, request, tmp_path)
    app = sessions_app(manager)
    one, two = webtest.TestApp(app), webtest.TestApp(app)
    one.get('/login/7')
    two.get('/login/7')
    assert len(manager.user_sessions(7)) == 2
    manager.now.advance(manager.max_age + 60)
    assert manager.user_sessions(7) == []


def test_cookie_store_points_to_user_version():
    """The cookie store cannot list or end sessions: ConfigError naming user_version."""
    manager = bs.CookieSession(secret=SECRET)
    with pytest.raises(bs.ConfigError, match='user_version'):
        manager.user_sessions('alice')
    with pytest.raises(bs.ConfigError, match='user_version'):
        manager.end_sessions('alice')


def test_sqlite_finds_a_users_sessions_through_an_index(tmp_path):
    """user_sessions and end_sessions never scan a table (EXPLAIN QUERY PLAN of
    every statement they run: SEARCH, never SCAN)."""
    path = str(tmp_path / 'indexed.db')
    statements, tracing = [], [False]

    def connect():
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.set_trace_callback(lambda sql: tracing[0] and statements.append(sql))
        return conn
    manager = bs.SQLSession(connect)
    app = sessions_app(manager)
    for n in range(30):
        webtest.TestApp(app).get('/login/user%d' % (n % 10))
    tracing[0] = True
    assert len(manager.user_sessions('user3')) == 3
    assert manager.end_sessions('user3') == 3
    tracing[0] = False
    queries = [s for s in statements if re.match(r'\s*(SELECT|DELETE|UPDATE|WITH)', s, re.I)]
    assert queries
    with sqlite3.connect(path) as conn:
        for sql in queries:
            plan = [row[-1] for row in conn.execute('EXPLAIN QUERY PLAN ' + sql)]
            assert not [p for p in plan if p.startswith('SCAN')], (sql, plan)


@slow
def test_redis_finds_a_users_sessions_without_keys_or_scan(redis_server):
    """user_sessions and end_sessions use an index: no KEYS or SCAN, not even in a script."""
    client = redis_server.client()
    manager = bs.RedisSession(client, prefix='idx%s:' % uuid.uuid4().hex[:8])
    app = sessions_app(manager)
    for n in range(20):
        webtest.TestApp(app).get('/login/user%d' % (n % 5))

    def scans():
        stats = client.info('commandstats')
        return sum(stats.get('cmdstat_' + c, {}).get('calls', 0) for c in ('keys', 'scan'))
    before = scans()
    assert len(manager.user_sessions('user2')) == 4
    assert manager.end_sessions('user2') == 4
    assert manager.user_sessions('user2') == []
    assert scans() == before


###############################################################################
# Sensitive pages and APIs: valid_user(fresh=, api=) ##########################
###############################################################################

def guarded_app(manager, **options):
    app = ident_app(manager, **options)
    valid_user = bs.authenticator(manager, login_url='/login-page')

    @app.route('/sensitive')
    @valid_user(fresh=300)
    def sensitive():
        return 'sensitive'

    @app.route('/relogin')
    def relogin(session):
        session.login(session.user_id)
        bs.redirect_back()

    @app.route('/api/data', method=['GET', 'POST'])
    @valid_user(api=True)
    def api_data():
        return {'data': 1}

    @app.route('/api/admin')
    @valid_user(api=True, require=lambda who: False)
    def api_admin():
        return {'admin': 1}

    @app.route('/admin')
    @valid_user(require=lambda who: False)
    def admin():
        return 'admin'
    return app


def test_fresh_sends_an_old_login_to_log_in_again_and_back(kind, request, tmp_path):
    """fresh=300: a login older than that goes to the login page and comes back;
    it stays signed in meanwhile, so other pages keep working."""
    manager = make_manager(kind, request, tmp_path)
    app = webtest.TestApp(guarded_app(manager))
    app.get('/login/alice')
    manager.now.advance(100)
    assert app.get('/sensitive').text == 'sensitive'
    manager.now.advance(300)
    response = app.get('/sensitive')
    assert redirected(response) and response.headers['Location'].endswith('/login-page')
    assert app.get('/private').text == 'private'          # still signed in
    assert app.get('/whoami').json['user_id'] == 'alice'
    response = app.get('/sensitive', headers={'Accept': 'application/json'}, status=401)
    assert response.json is not None
    response = app.get('/relogin')                         # logs in again
    assert response.headers['Location'].endswith('/sensitive')
    assert abs(app.get('/whoami').json['login_time'] - manager.now()) <= 1
    assert app.get('/sensitive').text == 'sensitive'


@pytest.mark.parametrize('accept', ['application/json', 'application/json, text/plain, */*',
                                    'text/html;q=0.5, application/json'])
def test_valid_user_answers_json_clients_with_401(accept):
    """A refused request that prefers JSON gets 401 and a small JSON body, no redirect."""
    manager = bs.CookieSession(secret=SECRET)
    app = webtest.TestApp(guarded_app(manager))
    response = app.get('/private', headers={'Accept': accept}, status=401)
    assert response.content_type == 'application/json' and isinstance(response.json, dict)
    assert len(response.body) < 300 and 'Location' not in response.headers


@pytest.mark.parametrize('accept', [None, '*/*', 'text/html,application/xhtml+xml,'
                                    'application/xml;q=0.9,*/*;q=0.8'])
def test_api_routes_answer_401_and_require_403_in_json(accept):
    """valid_user(api=True): 401 JSON whatever the Accept; require= refusal 403 JSON;
    browsers on other routes still get the redirect."""
    manager = bs.CookieSession(secret=SECRET)
    app = webtest.TestApp(guarded_app(manager))
    headers = {'Accept': accept} if accept else {}
    response = app.get('/api/data', headers=headers, status=401)
    assert response.content_type == 'application/json' and len(response.body) < 300
    assert 'Location' not in response.headers
    assert redirected(app.get('/private', headers=headers))
    app.get('/login/alice')
    assert app.get('/api/data', headers=headers).json == {'data': 1}
    response = app.get('/api/admin', headers=headers, status=403)
    assert response.content_type == 'application/json' and isinstance(response.json, dict)
    response = app.get('/admin', headers={'Accept': 'application/json'}, status=403)
    assert response.content_type == 'application/json'
    assert app.get('/whoami').json['user_id'] == 'alice'


def test_an_ended_session_gives_a_same_origin_fetch_401_not_403():
    """A page's fetch() POST after its session ended: 401 JSON, not 'Reload the page'."""
    manager = bs.CookieSession(secret=SECRET)
    app = webtest.TestApp(guarded_app(manager))
    app.get('/login/alice')
    app.get('/logout')
    response = app.post_json('/api/data', {'x': 1}, status=401, headers={
        'Sec-Fetch-Site': 'same-origin', 'Accept': 'application/json'})
    assert isinstance(response.json, dict)


###############################################################################
# Throttling: rate_limit ######################################################
###############################################################################

def test_rate_limit_counts_a_sliding_window(kind, request, tmp_path):
    """True while at most `limit` attempts fall in the last `period` seconds;
    keys are separate; reset_rate_limit clears one key."""
    manager = make_manager(kind, request, tmp_path)
    key = 'login:alice-%s' % uuid.uuid4().hex[:6]
    assert [manager.rate_limit(key, 3, 60) for _ in range(4)] == [True, True, True, False]
    assert manager.rate_limit('login:bob-' + key, 3, 60) is True     # another key
    manager.now.advance(61)
    assert manager.rate_limit(key, 3, 60) is True                    # the window moved on
    manager.reset_rate_limit(key)
    assert [manager.rate_limit(key, 3, 60) for _ in range(4)] == [True, True, True, False]
    # A burst across what would be a fixed window's edge is still one window.
    other = key + ':edge'
    assert manager.rate_limit(other, 3, 60) is True                  # t
    manager.now.advance(59)
    assert [manager.rate_limit(other, 3, 60) for _ in range(2)] == [True, True]   # t+59
    manager.now.advance(2)
    assert manager.rate_limit(other, 3, 60) is True                  # t+61: t left it
    assert manager.rate_limit(other, 3, 60) is False                 # 4 in (t+1, t+61]


@pytest.mark.parametrize('kind', SERVER_STORES)
def test_rate_limit_is_shared_through_the_store(kind, request, tmp_path):
    """Two managers on one directory, table or prefix (two app processes) share counts."""
    tag = uuid.uuid4().hex[:10]
    one = make_manager(kind, request, tmp_path, tag=tag)
    two = make_manager(kind, request, tmp_path, tag=tag)
    two.now = one.now
    assert [one.rate_limit('login:alice', 2, 60), two.rate_limit('login:alice', 2, 60)] \
        == [True, True]
    assert one.rate_limit('login:alice', 2, 60) is False
    assert two.rate_limit('login:alice', 2, 60) is False
    two.reset_rate_limit('login:alice')
    assert one.rate_limit('login:alice', 2, 60) is True


def test_rate_limit_is_atomic_across_threads(kind, request, tmp_path):
    """8 threads x 100 attempts at once, limit=50: exactly 50 let through."""
    manager = make_manager(kind, request, tmp_path)
    key = 'login:race-%s' % uuid.uuid4().hex[:6]
    barrier = threading.Barrier(8, timeout=30)

    def attempts():
        barrier.wait()
        return sum(1 for _ in range(100) if manager.rate_limit(key, 50, 3600))
    assert sum(in_threads(*[attempts] * 8)) == 50


RATE_WORKERS = r'''
import json, os, sys, traceback, test_bottlesession as t
kind, where, name, key, limit, period, attempts, workers = json.loads(sys.argv[1])
manager = t.build_store(kind, where, name or None)      # built once, then forked
go_read, go_write = os.pipe()
children = []
for _ in range(workers):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read)
            os.close(go_write)
            os.read(go_read, 1)                         # all start at once
            allowed = sum(1 for _ in range(attempts) if manager.rate_limit(key, limit, period))
            os.write(write, json.dumps(allowed).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write)
    children.append((pid, read))
os.write(go_write, b'g' * workers)
results, failed = [], []
for pid, read in children:
    with os.fdopen(read) as pipe:
        out = pipe.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        failed.append('worker %d exited with %d' % (pid, code))
    else:
        results.append(json.loads(out))
print(json.dumps(results))
sys.exit('; '.join(failed) or None)
'''


@slow
@pytest.mark.parametrize('kind', ['pickle', 'sqlite', 'postgres', 'mariadb', 'redis'])
def test_rate_limit_is_atomic_across_processes(kind, request, tmp_path, capsys):
    """8 processes forked after the store was built, 100 attempts each at once,
    limit=50: exactly 50 let through; this process then sees the same count."""
    where = {'pickle': str(tmp_path / 'files'), 'sqlite': str(tmp_path / 'db')}.get(kind) \
        or server_address(kind, request)
    tag = uuid.uuid4().hex[:8]
    name = {'pickle': '', 'sqlite': '', 'redis': 'rl%s:' % tag}.get(kind, 'rl_' + tag)
    key = 'login:alice'
    proc = subprocess.Popen([sys.executable, '-c', RATE_WORKERS,
                             json.dumps([kind, where, name, key, 50, 3600, 100, 8])],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, err[-3000:]
    allowed = json.loads(out.strip().splitlines()[-1])
    assert len(allowed) == 8 and sum(allowed) == 50, allowed
    manager = build_store(kind, where, name or None)
    assert manager.rate_limit(key, 50, 3600) is False       # the count is shared
    manager.reset_rate_limit(key)
    assert manager.rate_limit(key, 50, 3600) is True
    report(capsys, '%s: 8 forked processes x 100 attempts, limit 50: %s let through (%d)'
           % (kind, allowed, sum(allowed)))


###############################################################################
# Passwords ###################################################################
###############################################################################

def scrypt_hash(password, salt, log_n, r, p, length=32):
    """The hash format, built independently of the module."""
    key = hashlib.scrypt(password, salt=salt, n=2 ** log_n, r=r, p=p, dklen=length,
                         maxmem=2 ** 28)
    return 'scrypt$%d$%d$%d$%s$%s' % (log_n, r, p, b64(salt), b64(key))


def test_a_stored_key_shorter_or_longer_than_32_bytes_is_refused():
    """A hash whose key was cut short (a narrow column) or is longer never verifies."""
    salt = b'0123456789abcdef'
    full = scrypt_hash(b'pw', salt, 14, 8, 1)
    assert bs.check_password('pw', full) is True
    key = base64.urlsafe_b64decode(full.split('$')[5] + '=')
    for cut in (16, 24, 31):
        truncated = full.rsplit('$', 1)[0] + '$' + b64(key[:cut])
        assert bs.check_password('pw', truncated) is False, cut
        assert bs.needs_rehash(truncated) is True
    longer = scrypt_hash(b'pw', salt, 14, 8, 1, length=64)
    assert bs.check_password('pw', longer) is False


@pytest.mark.parametrize('log_n', [1, 4, 10, 12, 13])
def test_parameters_below_the_floor_are_refused(log_n):
    """N below 2**14 never verifies, even with the right password; needs_rehash says
    so. At the floor (2**14) it verifies; anything weaker than (17, 8, 1) still
    needs a rehash."""
    weak = scrypt_hash(b'pw', b'0123456789abcdef', log_n, 8, 1)
    assert bs.check_password('pw', weak) is False
    assert bs.needs_rehash(weak) is True
    at_floor = scrypt_hash(b'pw', b'0123456789abcdef', 14, 8, 1)
    assert bs.check_password('pw', at_floor) is True and bs.needs_rehash(at_floor) is True
    for params in ('16$8$1', '17$4$1', '15$8$1'):
        fake = 'scrypt$%s$%s$%s' % (params, b64(os.urandom(16)), b64(os.urandom(32)))
        assert bs.needs_rehash(fake) is True, params


def test_scrypt_parameters_can_be_lowered_for_tests_and_are_checked(monkeypatch):
    """The documented way to make hashing fast in tests: bs.SCRYPT_PARAMETERS set
    to the floor (14, 8, 1). Values below the floor are refused, not used."""
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as readme:
        assert 'SCRYPT_PARAMETERS' in readme.read()
    monkeypatch.setattr(bs, 'SCRYPT_PARAMETERS', (14, 8, 1))
    start = time.perf_counter()
    hashed = bs.hash_password('pw')
    assert hashed.startswith('scrypt$14$8$1$')
    assert bs.check_password('pw', hashed) is True and bs.check_password('px', hashed) is False
    assert time.perf_counter() - start < 1.0
    monkeypatch.setattr(bs, 'SCRYPT_PARAMETERS', (10, 8, 1))
    with pytest.raises(ValueError):
        bs.hash_password('pw')


def test_check_password_against_none_runs_a_full_scrypt(monkeypatch):
    """check_password(pw, None) runs scrypt at the current parameters, then says False."""
    monkeypatch.setattr(bs, 'SCRYPT_PARAMETERS', (14, 8, 1))
    calls = []
    real = hashlib.scrypt

    def spy(*args, **kwargs):
        calls.append(kwargs.get('n'))
        return real(*args, **kwargs)
    monkeypatch.setattr(hashlib, 'scrypt', spy)
    assert bs.check_password('wonderland', None) is False
    assert calls and set(calls) == {2 ** 14}


@slow
def test_check_password_against_none_costs_as_much_as_a_wrong_password():
    """At the default parameters a missing user takes as long as a wrong password."""
    hashed = bs.hash_password('wonderland')

    def timed(stored):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert bs.check_password('guess', stored) is False
            times.append(time.perf_counter() - start)
        return sorted(times)[1]
    missing_user, wrong_password = timed(None), timed(hashed)
    assert 0.5 < missing_user / wrong_password < 2, (missing_user, wrong_password)


###############################################################################
# Flash messages are bounded ##################################################
###############################################################################

def flash_login_app(manager):
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager))

    @app.route('/login')
    def login_form(session):            # the quick start: it never shows the flashes
        return session.csrf_token()

    @app.route('/login', method='POST')
    def login(session):
        if bottle.request.forms.get('password') != 'wonderland':
            session.flash('Wrong name or password (attempt %s).'
                          % bottle.request.forms.get('n'))
            bottle.redirect('/login')
        session.login(bottle.request.forms.get('name'))
        bottle.redirect('/')

    @app.route('/')
    def index(session):
        return json.dumps(session.get_flashed_messages())
    return webtest.TestApp(app)


def test_failed_logins_never_make_a_500(kind, request, tmp_path):
    """200 failed logins: each a redirect, never a 500; the newest messages are
    kept in order, the oldest dropped; a good login still works."""
    manager = make_manager(kind, request, tmp_path)
    app = flash_login_app(manager)
    for n in range(200):
        token = app.get('/login').text
        response = app.post('/login', {'name': 'alice', 'password': 'x', 'n': n,
                                       'csrf_token': token}, expect_errors=True)
        assert redirected(response), (n, response.status)
    token = app.get('/login').text
    app.post('/login', {'name': 'alice', 'password': 'wonderland', 'csrf_token': token},
             status='3*')
    shown = json.loads(app.get('/').text)
    expected = ['Wrong name or password (attempt %d).' % n for n in range(200)]
    assert 0 < len(shown) < 200
    assert shown == expected[-len(shown):]          # the oldest dropped
    assert json.loads(app.get('/').text) == []


###############################################################################
# CSRF: Sec-Fetch-Site and Origin first, the token as the fallback ###########
###############################################################################

HOST = 'app.example:8080'
ORIGIN = 'http://' + HOST


def csrf_site(manager, **options):
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, **options))
    valid_user = bs.authenticator(manager, login_url='/login-page')

    @app.route('/form')
    def form(session):
        return session.csrf_token()

    @app.route('/post', method=['POST', 'PUT', 'PATCH', 'DELETE'])
    def post(session):
        session['posted'] = bottle.request.method
        return 'posted'

    @app.route('/plain', method=['GET', 'POST', 'PUT', 'PATCH', 'DELETE'])
    def plain():
        return 'plain'

    @app.route('/safe', method=['GET', 'OPTIONS', 'TRACE'])
    def safe(session):
        return 'safe'

    @app.route('/open', method='POST', session={'csrf': False})
    def open_post(session):
        session['opened'] = True
        return 'open'

    @app.route('/hook', method='POST', session={'csrf': False})
    def hook():
        return 'hook'

    @app.route('/json', method='POST')
    def json_post(session):
        session['got'] = bottle.request.json
        return {'ok': True}

    @app.route('/vu', method='POST')
    @valid_user()
    def vu():
        return 'vu ' + bottle.request.environ.get('REMOTE_USER', '')

    @app.route('/login/<user_id>')
    def login(user_id, session):
        session.login(user_id)
        return 'in'

    @app.route('/login-form', method='POST')
    def login_form(session):
        session.login(bottle.request.forms.get('name'))
        return 'in'

    @app.route('/legacy/<name>')
    def legacy(name, session):
        session['valid'], session['name'] = True, name
        return 'in'

    @app.route('/regenerate')
    def regenerate(session):
        session.regenerate()
        return 'ok'

    @app.route('/logout')
    def logout(session):
        session.logout()
        return 'bye'

    @app.route('/logout-form')
    def logout_form(session):           # the logout page shows a login form
        session.logout()
        return session.csrf_token()

    @app.route('/cart')
    def cart(session):
        session['cart'] = 1
        return 'ok'

    @app.route('/whoami')
    def whoami(session):
        return {'user_id': session.user_id, 'posted': session.get('posted')}
    app.catchall = True
    return app


def site(manager, **options):
    return webtest.TestApp(csrf_site(manager, **options), extra_environ={'HTTP_HOST': HOST})


@pytest.fixture
def cookie_site():
    manager = bs.CookieSession(secret=SECRET)
    return manager, site(manager)


def test_rule1_every_unsafe_request_to_every_route_is_checked(cookie_site):
    """Routes without `session` are checked too (all unsafe methods); safe methods
    are not; a header-checked POST to such a route stores and sends nothing; the
    opt-outs still work."""
    manager, app = cookie_site
    for method in ('post', 'put', 'patch', 'delete'):
        response = getattr(app, method)('/plain', status=403)
        assert 'token' in response.text.lower()
        assert getattr(app, method)('/plain', headers={'Sec-Fetch-Site': 'same-origin'}
                                    ).text == 'plain'
    for method in ('GET', 'HEAD', 'OPTIONS', 'TRACE'):
        assert app.request('/safe', method=method).status_int == 200
    fresh = site(manager)
    response = fresh.post('/plain', headers={'Sec-Fetch-Site': 'same-origin'})
    assert response.text == 'plain' and set_cookie_headers(response) == []
    assert set_cookie_headers(fresh.get('/plain')) == []
    # The opt-outs: session={'csrf': False} on a route (with or without session),
    # csrf=False on the plugin.
    headers = {'Sec-Fetch-Site': 'cross-site'}
    assert app.post('/open', headers=headers).text == 'open'
    assert app.post('/hook', headers=headers).text == 'hook'
    off = site(manager, csrf=False)
    for path, body in (('/post', 'posted'), ('/plain', 'plain')):
        assert off.post(path, headers=headers).text == body
        assert off.post(path).text == body


def test_rule1_a_valid_user_post_without_session_is_checked(kind, request, tmp_path):
    """A @valid_user POST handler that doesn't take `session` gets the CSRF check."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    app.get('/login/alice')
    app.post('/vu', status=403)
    app.post('/vu', headers={'Sec-Fetch-Site': 'cross-site'}, status=403)
    app.post('/vu', headers={'Origin': 'http://evil.example'}, status=403)
    assert app.post('/vu', headers={'Sec-Fetch-Site': 'same-origin'}).text.startswith('vu')
    assert app.post('/vu', {'csrf_token': app.get('/form').text}).text.startswith('vu')


@pytest.mark.parametrize('value', ['cross-site', 'same-site'])
def test_rule2_cross_and_same_site_are_refused_whatever_the_token(value):
    """Sec-Fetch-Site cross-site or same-site: 403, even with a valid token."""
    manager = bs.CookieSession(secret=SECRET)
    app = site(manager)
    token = app.get('/form').text
    for path in ('/post', '/plain', '/json'):
        response = app.post(path, {'csrf_token': token}, status=403,
                            headers={'Sec-Fetch-Site': value})
        assert 'sec-fetch-site' in response.text.lower()
    app.post('/post', headers={'Sec-Fetch-Site': value, 'X-CSRF-Token': token}, status=403)
    assert app.get('/whoami').json['posted'] is None


@pytest.mark.parametrize('value', ['same-origin', 'none'])
def test_rule3_same_origin_and_none_need_no_token(kind, value, request, tmp_path):
    """Sec-Fetch-Site same-origin or none: accepted without a token, the save kept;
    a page's own fetch() POST of JSON just works."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    app.get('/login/alice')
    headers = {'Sec-Fetch-Site': value}
    assert app.post('/post', headers=headers).text == 'posted'
    assert app.get('/whoami').json['posted'] == 'POST'
    assert app.post_json('/json', {'a': [1, 2]}, headers=headers).json == {'ok': True}
    assert app.put('/post', headers=headers).text == 'posted'
    assert app.get('/whoami').json == {'user_id': 'alice', 'posted': 'PUT'}


def test_rule4_origin_must_be_the_requests_own():
    """Without Sec-Fetch-Site: a matching Origin needs no token; another host, port
    or scheme, or Origin: null, is refused even with a valid token."""
    manager = bs.CookieSession(secret=SECRET)
    app = site(manager)
    token = app.get('/form').text
    assert app.post('/post', headers={'Origin': ORIGIN}).text == 'posted'
    assert app.post_json('/json', {'a': 1}, headers={'Origin': ORIGIN}).json == {'ok': True}
    for origin in ('http://app.example:8081', 'http://app.example', 'https://app.example:8080',
                   'http://evil.example:8080', 'http://sub.app.example:8080', 'null'):
        response = app.post('/post', {'csrf_token': token}, headers={'Origin': origin},
                            status=403)
        assert 'origin' in response.text.lower(), origin
    other_host = webtest.TestApp(app.app, extra_environ={'HTTP_HOST': 'other.example'})
    assert other_host.post('/plain', headers={'Origin': 'http://other.example'}).text == 'plain'


def test_rule4_trusted_origins():
    """Origins listed in trusted_origins are accepted without a token; only those."""
    manager = bs.CookieSession(secret=SECRET)
    app = site(manager, trusted_origins=['https://admin.example', 'http://localhost:3000'])
    for origin in ('https://admin.example', 'http://localhost:3000', ORIGIN):
        assert app.post('/post', headers={'Origin': origin}).text == 'posted'
    for origin in ('https://admin.example:444', 'http://admin.example', 'http://localhost:3001',
                   'https://evil.example', 'null'):
        app.post('/post', headers={'Origin': origin}, status=403)


def test_rule5_neither_header_the_token_decides(kind, request, tmp_path):
    """Old browsers and non-browser clients: the token (field or header) decides,
    on routes with and without `session`."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    response = app.post('/post', status=403)
    assert 'token' in response.text.lower()
    token = app.get('/form').text
    app.post('/post', {'csrf_token': token[:40] + ('A' if token[40] != 'A' else 'B')
                       + token[41:]}, status=403)
    assert app.post('/post', {'csrf_token': token}).text == 'posted'
    app.post('/plain', status=403)                  # a route without session too
    assert app.post('/plain', headers={'X-CSRF-Token': app.get('/form').text}).text == 'plain'


def test_rule6_pre_login_tokens_are_dead_after_signing_in(kind, request, tmp_path):
    """A visitor's token and a stored anonymous session's token die at login(),
    regenerate() and a legacy login; the new token works."""
    manager = make_manager(kind, request, tmp_path)
    failures = []
    for path in ('/login/alice', '/regenerate', '/legacy/alice'):
        app = site(manager)
        visitor = app.get('/form').text
        app.get('/cart')
        stored = app.get('/form').text
        app.get(path, expect_errors=True)
        for name, token in (('visitor', visitor), ('stored', stored)):
            if app.post('/post', {'csrf_token': token}, expect_errors=True).status_int != 403:
                failures.append('%s: the %s token still works' % (path, name))
        fresh = app.get('/form').text
        if app.post('/post', {'csrf_token': fresh}, expect_errors=True).text != 'posted':
            failures.append('%s: the new token does not work' % path)
    assert failures == []


def test_rule6_tokens_rotate_at_logout_and_the_logout_page_form_works(kind, request,
                                                                       tmp_path):
    """After logout the signed-in token and the pre-login visitor token are dead,
    and a form rendered on the logout page itself works."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    pre_login = app.get('/form').text
    app.get('/login/alice')
    signed_in = app.get('/form').text
    logout_page = app.get('/logout-form').text
    for token in (pre_login, signed_in):
        app.post('/post', {'csrf_token': token}, status=403)
    assert app.post('/post', {'csrf_token': logout_page}).text == 'posted'
    assert app.get('/whoami').json['user_id'] is None


def test_rule6_storing_an_anonymous_session_keeps_open_forms_valid(kind, request, tmp_path):
    """Viewing forms stores nothing on the server; a later GET that stores an
    anonymous session (a cart) leaves the tokens of the open forms valid."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    first, second = app.get('/form').text, app.get('/form').text
    assert count_records(manager) == 0
    app.get('/cart')
    third = app.get('/form').text
    for token in (first, second, third):
        assert app.post('/post', {'csrf_token': token}).text == 'posted'


def visitor_cookie_names(manager, response):
    """The cookies a form view set, and the visitor-cookie names today's code uses."""
    names = {h.split('=', 1)[0] for h in set_cookie_headers(response)}
    return names | {manager.cookie_name + '_csrf', '__Host-' + manager.cookie_name + '_csrf'}


def test_rule6_a_planted_or_shadowing_visitor_cookie_never_wins(kind, request, tmp_path):
    """A visitor cookie whose value the attacker chose is never used: its token is
    refused; sent before the app's own cookie, it does not hide that one."""
    manager = make_manager(kind, request, tmp_path)
    app = site(manager)
    response = app.get('/form')
    own_token = response.text
    own = '; '.join('%s=%s' % (k, v) for k, v in app.cookies.items())
    planted = b64(os.urandom(32))
    names = visitor_cookie_names(manager, response) - {manager.cookie_name}
    tossed = '; '.join('%s=%s' % (name, planted) for name in sorted(names))
    attacker = webtest.TestApp(app.app, extra_environ={'HTTP_HOST': HOST})
    attacker.post('/login-form', {'name': 'mallory', 'csrf_token': token_for(planted)},
                  headers={'Cookie': tossed}, status=403)
    victim = webtest.TestApp(app.app, extra_environ={'HTTP_HOST': HOST})
    victim.post('/login-form', {'name': 'mallory', 'csrf_token': token_for(planted)},
                headers={'Cookie': tossed + '; ' + own}, status=403)
    assert victim.post('/post', {'csrf_token': own_token},
                       headers={'Cookie': tossed + '; ' + own}).text == 'posted'
    assert count_records(manager) <= (0 if kind == 'cookie' else 1)


def test_rule6_an_attackers_genuine_visitor_cookie_loses_to_the_victims_session(
        kind, request, tmp_path):
    """Login CSRF with neither header: the attacker tosses the visitor cookie from
    his own visit and posts his own token; the victim's stored session wins."""
    manager = make_manager(kind, request, tmp_path)
    attacker = site(manager)
    response = attacker.get('/form')
    attackers_token = response.text
    names = visitor_cookie_names(manager, response) - {manager.cookie_name}
    tossed = '; '.join('%s=%s' % (k, v) for k, v in attacker.cookies.items() if k in names)
    victim = site(manager)
    victim.get('/cart')                             # her own, stored, anonymous session
    own = '; '.join('%s=%s' % (k, v) for k, v in victim.cookies.items())
    victim.post('/login-form', {'name': 'mallory', 'csrf_token': attackers_token},
                headers={'Cookie': (tossed + '; ' + own) if tossed else own}, status=403)
    victim.post('/login-form', {'name': 'mallory', 'csrf_token': attackers_token},
                headers={'Cookie': (tossed + '; ' + own) if tossed else own,
                         'Sec-Fetch-Site': 'same-site'}, status=403)
    assert victim.get('/whoami').json['user_id'] is None
    assert victim.post('/post', {'csrf_token': victim.get('/form').text}).text == 'posted'


JUNK = ['', '"', 'A' * 43, 'A' * 43 + '.1700000000.' + 'B' * 43, '%00', 'x' * 5000,
        'a.b.c', '\\"\\', '==', b64(b'\xff' * 32) + '.' + b64(b'\x00' * 32)]


def test_rule6_a_malformed_visitor_cookie_is_a_403_not_a_500():
    """Junk under the visitor cookie's name: a 403 (not a 500) without the app's own
    cookie; with it (junk first), the own token still works."""
    manager = bs.CookieSession(secret=SECRET)
    app = site(manager)
    response = app.get('/form')
    own_token = response.text
    own = '; '.join('%s=%s' % (k, v) for k, v in app.cookies.items())
    names = visitor_cookie_names(manager, response) - {manager.cookie_name}
    failures = []
    for junk in JUNK:
        tossed = '; '.join('%s=%s' % (name, junk) for name in sorted(names))
        stranger = webtest.TestApp(app.app, extra_environ={'HTTP_HOST': HOST})
        for token, cookie, expected in ((own_token, tossed, 403),
                                        (token_for('A' * 43), tossed, 403),
                                        (own_token, tossed + '; ' + own, 200)):
            got = stranger.post('/post', {'csrf_token': token}, headers={'Cookie': cookie},
                                expect_errors=True).status_int
            if got != expected:
                failures.append((junk[:50], cookie == tossed, got))
    assert failures == []


@pytest.mark.parametrize('headers, check', [
    ({'Sec-Fetch-Site': 'cross-site'}, 'sec-fetch-site'),
    ({'Origin': 'http://evil.example'}, 'origin'),
    ({'Origin': 'null'}, 'origin'),
    ({}, 'token')])
@pytest.mark.parametrize('accept', ['application/json', 'application/json, text/plain, */*'])
def test_rule7_refusals_are_403_json_for_json_clients(headers, check, accept):
    """A refused request that prefers JSON gets a JSON 403 that names the check."""
    manager = bs.CookieSession(secret=SECRET)
    app = site(manager)
    response = app.post_json('/json', {'a': 1}, status=403,
                             headers=dict(headers, Accept=accept))
    assert response.content_type == 'application/json'
    assert isinstance(response.json, dict) and check in json.dumps(response.json).lower()
    html = app.post('/post', headers=dict(headers, Accept='text/html'), status=403)
    assert html.content_type != 'application/json' and check in html.text.lower()


def test_rule7_check_csrf_applies_the_same_rules_without_the_plugin():
    """session.check_csrf() in an app without the plugin: headers first, then the token."""
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()

    @app.route('/form')
    def form():
        return manager.get_session().csrf_token()

    @app.route('/post', method='POST')
    def post():
        manager.get_session().check_csrf()
        return 'ok'
    test = webtest.TestApp(app, extra_environ={'HTTP_HOST': HOST})
    token = test.get('/form').text
    for headers in ({'Sec-Fetch-Site': 'cross-site'}, {'Sec-Fetch-Site': 'same-site'},
                    {'Origin': 'http://evil.example'}, {'Origin': 'null'}):
        test.post('/post', {'csrf_token': token}, headers=headers, status=403)
    for headers in ({'Sec-Fetch-Site': 'same-origin'}, {'Sec-Fetch-Site': 'none'},
                    {'Origin': ORIGIN}):
        assert test.post('/post', headers=headers).text == 'ok'
    test.post('/post', status=403)
    assert test.post('/post', {'csrf_token': token}).text == 'ok'


###############################################################################
# In Chromium: two browser profiles, and attacks from a second port ###########
###############################################################################

@pytest.fixture
def new_browser():
    """A factory of Chromium drivers, each with a profile (user-data-dir) of its own."""
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver_path = shutil.which('chromedriver')
    if not chromium or not driver_path:
        missing('Chromium and chromedriver', 'apt-get install chromium chromium-driver')
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing('selenium', "pip install -e '.[test]'")
    made = []

    def make():
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        profile = tempfile.mkdtemp(prefix='bs-chromium-')
        for flag in ('--headless=new', '--no-sandbox', '--disable-gpu',
                     '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
                     '--disable-background-networking', '--disable-component-update',
                     '--disable-sync', '--user-data-dir=' + profile, '--password-store=basic',
                     '--disable-features=PasswordLeakDetection'):
            options.add_argument(flag)
        options.add_experimental_option('prefs', {'credentials_enable_service': False,
                                                  'profile.password_manager_enabled': False})
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(30)
        made.append((driver, profile))
        return driver
    yield make
    for driver, profile in made:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


PASSWORDS = {'alice': 'wonderland', 'bob': 'builder'}


def devices_app(manager):
    """A login form, a home page, and 'log out everywhere else'."""
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, load_user=lambda uid: uid if uid in PASSWORDS
                                 else None))

    @app.route('/login')
    def login_page(session):
        return ('<!doctype html><form method="post" action="/login">'
                '<input id="username" name="username"><input id="password" name="password" '
                'type="password"><input type="hidden" name="csrf_token" value="%s">'
                '<button id="submit">Log in</button></form>' % session.csrf_token())

    @app.route('/login', method='POST')
    def login(session):
        name = bottle.request.forms.get('username')
        if PASSWORDS.get(name) != bottle.request.forms.get('password'):
            bottle.redirect('/login')
        session.login(name)
        bottle.redirect('/home')

    @app.route('/home')
    def home(user, session):
        if user is None:
            bottle.redirect('/login')
        ended = bottle.request.query.get('ended', '')
        return ('<!doctype html><p id="user">%s</p><p id="ended">%s</p>'
                '<form method="post" action="/end-others"><input type="hidden" '
                'name="csrf_token" value="%s"><button id="end-others">Log out everywhere '
                'else</button></form>' % (user, ended, session.csrf_token()))

    @app.route('/end-others', method='POST')
    def end_others(session):
        ended = manager.end_sessions(session.user_id, keep=session)
        bottle.redirect('/home?ended=%d' % ended)
    return app


@slow
def test_log_out_everywhere_else_in_two_browser_profiles(new_browser, tmp_path, capsys):
    """Two Chromium profiles signed in as alice; one presses 'log out everywhere
    else'; the other is signed out on its next page, the first stays in."""
    manager = bs.PickleSession(str(tmp_path / 'sessions'))
    served = ServedApp(devices_app(manager))
    first, second = new_browser(), new_browser()
    try:
        steps = {}
        for driver in (first, second):
            ready, text, type_into, click = steps[driver] = browser_steps(driver)
            driver.get(served.url + '/login')
            ready('username')
            type_into('username', 'alice')
            type_into('password', 'wonderland')
            click('submit', 'user')
            assert text('user') == 'alice'
        assert len(manager.user_sessions('alice')) == 2
        ready, text, type_into, click = steps[first]
        click('end-others', 'ended')
        assert text('ended') == '1' and text('user') == 'alice'
        ready2, text2, _, _ = steps[second]
        second.get(served.url + '/home')
        ready2('username', 'user')
        assert second.current_url == served.url + '/login'
        first.get(served.url + '/home')
        ready('user')
        assert text('user') == 'alice'
        assert len(manager.user_sessions('alice')) == 1
    finally:
        served.close()
    report(capsys, 'Chromium, two profiles as alice: "log out everywhere else" ended 1 '
           'session; the other profile was sent to /login on its next page')


def attack_target_app(manager, notes):
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager))

    @app.route('/login')
    def login_page(session):
        return ('<!doctype html><p id="who">%s</p><form method="post" action="/login">'
                '<input id="username" name="username"><input id="password" name="password" '
                'type="password"><input type="hidden" name="csrf_token" value="%s">'
                '<button id="submit">Log in</button></form>'
                % (session.user_id or 'nobody', session.csrf_token()))

    @app.route('/login', method='POST')
    def login(session):
        name = bottle.request.forms.get('username')
        if PASSWORDS.get(name) != bottle.request.forms.get('password'):
            bottle.redirect('/login')
        session.login(name)
        bottle.redirect('/login')

    @app.route('/page')
    def page(session):
        return '<!doctype html><p id="who">%s</p>' % (session.user_id or 'nobody')

    @app.route('/api/note', method='POST')
    def note(session):
        if session.user_id is None:
            bottle.abort(401)
        notes.append(json.loads(bottle.request.body.read() or b'null'))
        return {'notes': len(notes)}
    return app


class CookieLog(RequestLog):
    """RequestLog that also keeps each request's whole Cookie header."""

    def __call__(self, environ, start_response):
        result = super().__call__(environ, start_response)
        self.entries[-1]['cookie_header'] = environ.get('HTTP_COOKIE', '')
        return result


def tossing_site(target, toss_script, fields):
    """The attacker's pages on another port: /toss runs a script that sets cookies
    for 127.0.0.1 (cookies do not separate ports), then posts the login form."""
    def app(environ, start_response):
        inputs = ''.join('<input type="hidden" name="%s" value="%s">' % item
                         for item in fields.items())
        body = ('<!doctype html><p id="attacker">prize</p><form id="f" method="post" '
                'action="%s/login">%s</form><script>%s;document.getElementById("f").submit()'
                '</script>' % (target, inputs, toss_script)) if environ['PATH_INFO'] == '/toss' \
            else '<!doctype html><p id="attacker">blank</p>'
        body = body.encode()
        start_response('200 OK', [('Content-Type', 'text/html'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    return app


@slow
@pytest.mark.parametrize('how', ['host-prefix-secure', 'path-login-shadow'])
def test_cookie_tossing_login_csrf_from_another_port_fails(browser, how, tmp_path, capsys):
    """From a page on a second port of 127.0.0.1 the attacker tosses the cookies
    from his own visit of the login form and posts it with his own token: refused,
    the victim is not signed in as him, and nothing changed on the server.

    host-prefix-secure: the app uses a __Host- cookie name and secure=True, the
    victim has not been to the site yet, the tossed cookies are __Host- style
    (Secure, Path=/). path-login-shadow: default settings, the victim has her own
    visitor cookie, the tossed ones have Path=/login so they are sent first."""
    notes = []
    options = ({'cookie_name': '__Host-sid', 'secure': True}
               if how == 'host-prefix-secure' else {})
    manager = bs.PickleSession(str(tmp_path / 'sessions'), **options)
    log = CookieLog(attack_target_app(manager, notes))
    served, attacker = ServedApp(log), None
    ready, text, type_into, click = browser_steps(browser)
    try:
        with urllib.request.urlopen(served.url + '/login') as response:       # his own visit
            page = response.read().decode()
            set_cookies = response.headers.get_all('Set-Cookie') or []
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
        pairs = [h.split(';', 1)[0] for h in set_cookies]
        assert pairs, 'the login form set no visitor cookie to toss'
        attrs = '; path=/; secure' if how == 'host-prefix-secure' else '; path=/login'
        script = ';'.join('document.cookie = %s' % json.dumps(pair + attrs) for pair in pairs)
        attacker = ServedApp(tossing_site(served.url, script, {
            'username': 'bob', 'password': 'builder', 'csrf_token': token}))
        if how == 'path-login-shadow':
            browser.get(served.url + '/login')              # the victim's own visit
            ready('username')
        files_before = sorted(os.listdir(manager.session_dir))
        seen = len(log.entries)
        browser.get(attacker.url + '/toss')

        def posted():
            assert [e for e in log.entries[seen:] if e['method'] == 'POST']
        wait_for(posted, 15)
        post = [e for e in log.entries[seen:] if e['method'] == 'POST'][0]
        assert any(pair in post['cookie_header'] for pair in pairs), \
            'no tossed cookie reached the app: %r' % post['cookie_header']
        assert post['status'] == 403
        assert sorted(os.listdir(manager.session_dir)) == files_before
        browser.get(served.url + '/page')
        ready('who')
        assert text('who') == 'nobody'
    finally:
        if attacker:
            attacker.close()
        served.close()
    report(capsys, 'Chromium, cookie tossing from another port (%s): login POST 403, '
           'victim not signed in, store unchanged' % how)


FETCH_SCRIPT = '''
const [url, mode, type, done] = arguments;
fetch(url, {method: 'POST', credentials: 'include', mode: mode,
            headers: {'Content-Type': type}, body: JSON.stringify({note: 'n'})})
  .then(r => done(r.type === 'opaque' ? 'opaque' : r.status))
  .catch(e => done('error: ' + e));
'''


@slow
def test_fetch_json_post_same_origin_accepted_cross_port_refused(browser, tmp_path, capsys):
    """A same-origin fetch() POST of JSON with no token is accepted; the same fetch
    from another port of 127.0.0.1, credentials 'include', is refused."""
    notes = []
    manager = bs.CookieSession(secret=SECRET)
    log = RequestLog(attack_target_app(manager, notes))
    served = ServedApp(log)
    attacker = ServedApp(tossing_site(served.url, '', {}))
    ready, text, type_into, click = browser_steps(browser)
    try:
        browser.get(served.url + '/login')
        ready('username')
        type_into('username', 'alice')
        type_into('password', 'wonderland')
        click('submit', 'who')
        assert text('who') == 'alice'
        browser.set_script_timeout(15)
        browser.get(served.url + '/page')
        ready('who')
        got = browser.execute_async_script(FETCH_SCRIPT, '/api/note', 'same-origin',
                                           'application/json')
        assert got == 200 and len(notes) == 1
        browser.get(attacker.url + '/')
        ready('attacker')
        seen = len(log.entries)
        for mode, kind_of in (('cors', 'application/json'), ('no-cors', 'text/plain')):
            browser.execute_async_script(FETCH_SCRIPT, served.url + '/api/note', mode, kind_of)
        time.sleep(0.5)
        posts = [e for e in log.entries[seen:] if e['method'] == 'POST']
        assert posts, 'the simple (no-cors) POST never reached the app'
        assert all(e['status'] == 403 for e in posts), posts
        assert len(notes) == 1
    finally:
        attacker.close()
        served.close()
    report(capsys, 'Chromium: same-origin fetch() JSON POST without a token 200; from '
           'another port with credentials: include: %d POST(s) reached the app, all 403'
           % len(posts))


def test_with_load_user_a_signed_in_session_without_a_user_is_signed_out(cookie_site):
    """A session signed in the original way without a name (or by 2.0) names
    no user: with load_user, valid_user must not let it in with user None."""
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, load_user={'alice': {'name': 'alice'}}.get))
    valid_user = bs.authenticator(manager, login_url='/login')

    @app.route('/legacy-login')
    def legacy_login(session):
        session['valid'] = True
        return 'ok'

    @app.route('/')
    @valid_user
    def index(user):
        return user['name']
    test = webtest.TestApp(app)
    test.get('/legacy-login')
    response = test.get('/')
    assert redirected(response) and response.headers['Location'].endswith('/login')
