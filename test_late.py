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
