"""Tests written after the outside attacks; merged into test_bottlesession.py."""
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
