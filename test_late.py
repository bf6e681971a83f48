"""Tests written after the outside attacks; merged into test_bottlesession.py."""
import urllib.parse

import bottle
import webtest
import bottlesession as bs

SECRET = 'x' * 32


def test_writing_name_on_a_login_session_does_not_change_its_user():
    """An app keyed by user name that keeps a display name in session['name']
    (as original-API code did): a user who renames themselves 'admin' must
    stay themselves. Only a session signed in the original way, which names
    no user id, treats a new 'name' as another login."""
    users = {'admin': {'name': 'admin', 'admin': True}, 'mallory': {'name': 'mallory'}}
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, load_user=users.get))

    @app.route('/login/<name>')
    def login(name, session):
        session.login(name)
        session['name'] = name
        return 'ok'

    @app.route('/rename/<name>')
    def rename(name, session):
        session['name'] = name
        return 'renamed'

    @app.route('/me')
    def me(session, user):
        return '%s %s' % (session.user_id, user['name'] if user else None)
    test = webtest.TestApp(app)
    test.get('/login/mallory')
    token_before = test.cookies[manager.cookie_name]
    test.get('/rename/admin')
    assert test.get('/me').text == 'mallory mallory'
    assert test.cookies[manager.cookie_name] != token_before        # the change was saved


class Clock:
    def __init__(self):
        import time
        self.t = time.time()

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def test_junk_keys_do_not_reset_another_limits_count():
    """The cookie store counts in memory and forgets keys once over 10,000:
    each by its own period, so junk keys with a short period (per IP, per
    minute) cannot wipe a long one (per account, per hour)."""
    manager = bs.CookieSession(secret=SECRET)
    manager.now = Clock()
    for _ in range(3):
        assert manager.rate_limit('login:alice', 3, 3600)
    assert not manager.rate_limit('login:alice', 3, 3600)
    manager.now.advance(120)
    for n in range(10002):
        manager.rate_limit('ip:%d' % n, 5, 60)
    manager.now.advance(120)
    manager.rate_limit('ip:x', 5, 60)           # the call that sweeps
    assert not manager.rate_limit('login:alice', 3, 3600)


def test_a_second_signed_visitor_cookie_makes_neither_trusted():
    """An attacker on another port of the host plants their own, validly
    signed visitor cookie with a longer Path, so it is sent first. For a
    browser that sends neither Sec-Fetch-Site nor Origin, the token decides:
    a token for either secret is refused, so neither wins."""
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager))

    @app.route('/form')
    def form(session):
        return session.csrf_token()

    @app.route('/login', method='POST')
    def login(session):
        session.login('whoever')
        return 'signed in'
    attacker, victim = webtest.TestApp(app), webtest.TestApp(app)
    attacker_token = attacker.get('/form').text
    victim_token = victim.get('/form').text
    name = manager.visitor_cookie
    both = '%s=%s; %s=%s' % (name, attacker.cookies[name], name, victim.cookies[name])
    for token in (attacker_token, victim_token):
        response = webtest.TestApp(app).post('/login', {'csrf_token': token},
                                             headers={'Cookie': both}, status=403)
        assert 'token' in response.text
    assert webtest.TestApp(app).post(
        '/login', {'csrf_token': victim_token},
        headers={'Cookie': '%s=%s' % (name, victim.cookies[name])}).text == 'signed in'


def test_with_autosave_off_a_login_or_logout_the_original_way_is_saved():
    """_commit saves a login or logout even with autosave off: one made by
    setting session['valid'] too, or a user could not log out."""
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, autosave=False))

    @app.route('/in')
    def sign_in(session):
        session['valid'] = True
        return 'in'

    @app.route('/out')
    def sign_out(session):
        session['valid'] = False
        return 'out'

    @app.route('/state')
    def state(session):
        return str(session.get('valid'))
    test = webtest.TestApp(app)
    test.get('/in')
    assert test.get('/state').text == 'True'
    test.get('/out')
    assert test.get('/state').text == 'False'


def test_current_user_outside_a_session_route_sends_the_cache_headers():
    users = {'alice': {'name': 'alice'}}
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, load_user=users.get))

    @app.route('/login')
    def login(session):
        session.login('alice')
        return 'ok'

    @app.route('/page')
    def page():
        user = bs.current_user()
        return 'hello %s' % (user and user['name'])
    test = webtest.TestApp(app)
    test.get('/login')
    response = test.get('/page')
    assert response.text == 'hello alice'
    assert response.headers.getall('Vary') == ['Cookie']
    assert response.headers['Cache-Control'] == 'private'


def test_flash_messages_that_echo_long_input_never_make_a_500():
    """A failed-login message that repeats the name tried: messages are
    bounded by size as well as by count, so the cookie always fits."""
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager))

    @app.route('/fail/<name>')
    def fail(name, session):
        session.flash('No user called %s.' % name)
        return 'ok'

    @app.route('/show')
    def show(session):
        return '\n'.join(session.get_flashed_messages())
    test = webtest.TestApp(app)
    for n in range(30):
        test.get('/fail/' + urllib.parse.quote(('é' if n % 2 else 'x') * (150 + n * 100)))
    shown = test.get('/show').text.split('\n')
    assert 1 <= len(shown) <= 20 and shown[-1].startswith('No user called ')


def test_rotating_the_secret_keeps_users_signed_in_with_user_version():
    users = {'alice': {'name': 'alice', 'v': '1'}}

    def app_with(manager):
        app = bottle.Bottle()
        app.install(bs.SessionPlugin(manager, load_user=users.get,
                                     user_version=lambda user: user['v']))

        @app.route('/login')
        def login(session):
            session.login('alice')
            return 'ok'

        @app.route('/me')
        def me(user):
            return user['name'] if user else 'nobody'
        return webtest.TestApp(app)
    old = app_with(bs.CookieSession(secret='old-secret-' + 'x' * 20))
    old.get('/login')
    cookie = old.cookies['session_data']
    new = app_with(bs.CookieSession(secret=['new-secret-' + 'y' * 20, 'old-secret-' + 'x' * 20]))
    assert new.get('/me', headers={'Cookie': 'session_data=' + cookie}).text == 'alice'


def test_a_url_wildcard_named_user_in_the_old_syntax_stays_the_url_value():
    manager = bs.CookieSession(secret=SECRET)
    app = bottle.Bottle()
    app.install(bs.SessionPlugin(manager, load_user=lambda uid: {'name': uid}))

    @app.route('/u/:user')
    def profile(user):
        return 'profile of %s' % user
    assert webtest.TestApp(app).get('/u/bob').text == 'profile of bob'
