"""The bottlesession demo: a login form, a protected page, a visit counter, logout.

    python3 example_app.py [--host 127.0.0.1] [--port 8080] [--store cookie|file|sqlite]

It needs no configuration. The cookie store signs with $SESSION_SECRET, or
else with a secret derived from this machine (and says why that is weak).
Accounts: alice / wonderland, bob / builder.
"""
import argparse
import html
import os

import bottle

import bottlesession

USERS = {'alice': 'wonderland', 'bob': 'builder'}     # hashed in make_app()

PAGE = '''<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><nav><a href="/">home</a> · <a href="/private?tab=stats">private page</a> ·
{account}</nav><h1>{title}</h1>{body}</body></html>'''


def page(session, title, body):
    if session.get('valid'):
        account = 'signed in as <b id="user">%s</b> · <a id="logout" href="/logout">log out' \
                  '</a>' % html.escape(session['name'])
    else:
        account = '<a id="login" href="/login">log in</a>'
    return PAGE.format(title=title, body=body, account=account)


def make_app(manager):
    app = bottle.Bottle()
    app.install(bottlesession.SessionPlugin(manager))
    valid_user = bottlesession.authenticator(manager, login_url='/login')
    # A real app stores only these hashes, made by hash_password() at sign-up.
    hashes = {name: bottlesession.hash_password(password) for name, password in USERS.items()}
    nobody = bottlesession.hash_password(os.urandom(16))   # unknown names take as long

    @app.route('/')
    def index(session):
        return page(session, 'bottlesession demo', '<p>Try the private page.</p>')

    @app.route('/private')
    @valid_user()
    def private(session):
        session['visits'] = session.get('visits', 0) + 1
        notes = ''.join('<li>%s</li>' % html.escape(n) for n in session.get('notes', []))
        return page(session, 'Private page', '''
            <p>Visits: <b id="visits">{visits}</b> · tab: <b id="tab">{tab}</b></p>
            <form method="post" action="/notes"><input name="note" id="note">
            <input type="hidden" name="csrf_token" value="{token}">
            <button id="add">add a note</button></form><ul id="notes">{notes}</ul>
            '''.format(visits=session['visits'], notes=notes, token=session.csrf_token(),
                       tab=html.escape(bottle.request.query.get('tab', ''))))

    @app.post('/notes')
    @valid_user()
    def add_note(session):
        session['notes'] = session.get('notes', []) + [bottle.request.forms.getunicode('note', '')]
        bottle.redirect('/private')

    @app.get('/login')
    def login_form(session, error=''):
        return page(session, 'Log in', '''<p id="error">{error}</p>
            <form method="post" action="/login">
            <input type="hidden" name="csrf_token" value="{token}">
            <label>Name <input name="username" id="username"></label>
            <label>Password <input name="password" id="password" type="password"></label>
            <button id="submit">log in</button></form>'''.format(error=error,
                                                                 token=session.csrf_token()))

    @app.post('/login')
    def login(session):
        name = bottle.request.forms.getunicode('username', '')
        password = bottle.request.forms.getunicode('password', '')
        if not bottlesession.check_password(password, hashes.get(name, nobody)):
            return login_form(session, 'Wrong name or password.')
        session['valid'] = True         # the id is rotated when this is saved
        session['name'] = name
        bottlesession.redirect_back(default='/private')

    @app.route('/logout')
    def logout(session):
        session.invalidate()
        bottle.redirect('/login')

    @app.error(500)
    def too_large(error):
        if isinstance(error.exception, bottlesession.SessionTooLarge):
            return ('<!doctype html><h1 id="too-large">Your session is full</h1><p>%s</p>'
                    '<p>Nothing was saved, and you are still signed in with your earlier '
                    'data. <a href="/private">Back</a></p>' % html.escape(str(error.exception)))
        return '<!doctype html><h1>Internal Server Error</h1>'

    return app


def make_manager(store):
    if store == 'file':
        return bottlesession.PickleSession()
    if store == 'sqlite':
        return bottlesession.SQLSession()
    return bottlesession.CookieSession(secret=os.environ.get('SESSION_SECRET'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default=os.environ.get('HOST', '127.0.0.1'))
    parser.add_argument('--port', type=int, default=int(os.environ.get('PORT', 8080)))
    parser.add_argument('--store', choices=['cookie', 'file', 'sqlite'], default='cookie')
    parser.add_argument('--server', default='wsgiref', help="a bottle server name")
    args = parser.parse_args()
    bottle.run(make_app(make_manager(args.store)), host=args.host, port=args.port,
               server=args.server)


if __name__ == '__main__':
    main()
