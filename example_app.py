"""The bottlesession demo: log in (with "remember me"), a private page with a
visit counter and notes, an admin-only page, flash messages, log out.

    python3 example_app.py [--host 127.0.0.1] [--port 8080] [--store cookie|file|sqlite]

It needs no configuration. The cookie store signs with $SESSION_SECRET, or
else with a secret derived from this machine (and says why that is weak).
Accounts: alice / wonderland (an admin), bob / builder.
"""
import argparse
import datetime
import html
import os

import bottle

import bottlesession

USERS = {'alice': 'wonderland', 'bob': 'builder'}     # hashed in make_app()
ADMINS = {'alice'}

PAGE = '''<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font: 16px/1.5 system-ui, sans-serif; color: #222; max-width: 42em;
       margin: 2em auto; padding: 0 1em; }}
nav {{ display: flex; gap: 1em; align-items: center; padding-bottom: .5em;
      border-bottom: 1px solid #ddd; }}
nav .account {{ margin-left: auto; }}
a {{ color: #2456a6; }}
form {{ display: grid; gap: .6em; max-width: 22em; }}
nav form {{ display: inline; }}
input, button {{ font: inherit; padding: .3em .6em; }}
button {{ background: #2456a6; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }}
.flash {{ padding: .5em 1em; margin: 1em 0; border-radius: 4px; background: #e6f0fc; }}
.flash.error, #error {{ background: #fce8e8; padding: .5em 1em; border-radius: 4px; }}
td, th {{ padding: .2em 1em .2em 0; text-align: left; }}
</style></head>
<body><nav><a href="/">home</a> <a href="/private?tab=stats">private page</a>
<a id="admin" href="/admin">admin</a> <span class="account">{account}</span></nav>
<div id="flashes">{flashes}</div><h1>{title}</h1>{body}</body></html>'''


def csrf_field(session):
    """Every form that posts carries this: the plugin refuses a POST without it."""
    return '<input type="hidden" name="csrf_token" value="%s">' % session.csrf_token()


def page(session, title, body):
    if session.get('valid'):
        account = ('signed in as <b id="user">%s</b> <form method="post" action="/logout">%s'
                   '<button id="logout">log out</button></form>'
                   % (html.escape(session['name']), csrf_field(session)))
    else:
        account = '<a id="login" href="/login">log in</a>'
    flashes = ''.join('<p class="flash %s">%s</p>' % (html.escape(category), html.escape(message))
                      for category, message in session.get_flashed_messages(with_categories=True))
    return PAGE.format(title=title, body=body, account=account, flashes=flashes)


def is_admin(session):
    return session.get('name') in ADMINS


def make_app(manager):
    app = bottle.Bottle()
    app.install(bottlesession.SessionPlugin(manager))      # checks the token on every POST
    valid_user = bottlesession.authenticator(manager, login_url='/login')
    # A real app stores only these hashes, made by hash_password() at sign-up.
    hashes = {name: bottlesession.hash_password(password) for name, password in USERS.items()}
    nobody = bottlesession.hash_password(os.urandom(16))   # unknown names take as long

    @app.route('/')
    def index(session):
        return page(session, 'bottlesession demo', '''<p>Log in as alice / wonderland (an
            admin) or bob / builder, then try the private page and the admin page.</p>''')

    @app.route('/private')
    @valid_user
    def private(session):
        session['visits'] = session.get('visits', 0) + 1
        notes = ''.join('<li>%s</li>' % html.escape(n) for n in session.get('notes', []))
        return page(session, 'Private page', '''
            <p>Visits: <b id="visits">{visits}</b> · tab: <b id="tab">{tab}</b></p>
            <form method="post" action="/notes">{csrf}<input name="note" id="note">
            <button id="add">add a note</button></form><ul id="notes">{notes}</ul>
            '''.format(visits=session['visits'], notes=notes, csrf=csrf_field(session),
                       tab=html.escape(bottle.request.query.get('tab', ''))))

    @app.post('/notes')
    @valid_user
    def add_note(session):
        session['notes'] = session.get('notes', []) + [bottle.request.forms.getunicode('note', '')]
        bottle.redirect('/private')

    @app.route('/admin')
    @valid_user(require=is_admin)       # others get 403 and stay signed in
    def admin(session):
        rows = ''.join('<tr><td>%s</td><td>%s</td><td><code>%s…</code></td></tr>'
                       % (name, 'yes' if name in ADMINS else 'no', html.escape(hashed[:48]))
                       for name, hashed in sorted(hashes.items()))
        return page(session, 'Admin', '''<p>Only admins see this page. The server keeps
            no passwords, only their scrypt hashes:</p><table id="accounts"><tr><th>name</th>
            <th>admin</th><th>password hash</th></tr>%s</table>''' % rows)

    @app.get('/login')
    def login_form(session):
        return page(session, 'Log in', '''<form method="post" action="/login">{csrf}
            <label>Name <input name="username" id="username"></label>
            <label>Password <input name="password" id="password" type="password"></label>
            <label><input type="checkbox" name="remember" id="remember"> remember me
            for 30 days</label><button id="submit">log in</button></form>
            '''.format(csrf=csrf_field(session)))

    @app.post('/login')
    def login(session):
        name = bottle.request.forms.getunicode('username', '')
        password = bottle.request.forms.getunicode('password', '')
        if not bottlesession.check_password(password, hashes.get(name, nobody)):
            session.flash('Wrong name or password.', 'error')
            bottle.redirect('/login')
        session['valid'] = True         # the id is rotated when this is saved
        session['name'] = name
        # Remembered: a cookie for 30 days. Otherwise it ends with the browser.
        remember = bottle.request.forms.get('remember')
        session.set_expiry(datetime.timedelta(days=30) if remember else 0)
        session.flash('Welcome back, %s' % name)
        bottlesession.redirect_back(default='/private')

    @app.post('/logout')
    def logout(session):
        if session.get('valid'):        # stores nothing for a visitor who was not in
            session.invalidate()
            session.flash('You are logged out')
        bottle.redirect('/login')

    @app.error(403)
    def forbidden(error):
        return PAGE.format(title='Forbidden', account='', flashes='', body='<p id="error">%s'
                           '</p><p><a href="/">Home</a></p>' % html.escape(error.body))

    @app.error(500)
    def too_large(error):
        if isinstance(error.exception, bottlesession.SessionTooLarge):
            return PAGE.format(title='Your session is full', account='', flashes='', body=(
                '<p id="too-large">%s</p><p>Nothing was saved, and you are still signed in '
                'with your earlier data. <a href="/private">Back</a></p>'
                % html.escape(str(error.exception))))
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
