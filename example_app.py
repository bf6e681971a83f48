"""The bottlesession demo: log in (with "remember me"), a private page with a
visit counter and notes, an admin-only page, flash messages, your devices (and
"log out everywhere else"), a password change, a fetch() call, log out.

    python3 example_app.py [--host 127.0.0.1] [--port 8080] [--store file|sqlite|cookie]

It needs no configuration. Sessions are kept in files in a private temp
directory (--store file, the default), so the devices page can list them.
Accounts: alice / wonderland (an admin), bob / builder. They live in memory:
a changed password lasts until the demo restarts.
"""
import argparse
import datetime
import html
import os
import socketserver
import unicodedata
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

import bottlesession

ACCOUNTS = {'alice': 'wonderland', 'bob': 'builder'}   # hashed in make_app()
ADMINS = {'alice'}
LOGIN_ATTEMPTS, LOGIN_PERIOD = 5, 300                   # per name: 5 tries per 5 minutes

PAGE = '''<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font: 16px/1.5 system-ui, sans-serif; color: #222; max-width: 42em;
       margin: 2em auto; padding: 0 1em; }}
nav {{ display: flex; gap: 1em; align-items: center; padding-bottom: .5em;
      border-bottom: 1px solid #ddd; flex-wrap: wrap; }}
nav .account {{ margin-left: auto; }}
a {{ color: #2456a6; }}
form {{ display: grid; gap: .6em; max-width: 22em; }}
nav form, td form {{ display: inline; }}
input, button {{ font: inherit; padding: .3em .6em; }}
button {{ background: #2456a6; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }}
.flash {{ padding: .5em 1em; margin: 1em 0; border-radius: 4px; background: #e6f0fc; }}
.flash.error, #error {{ background: #fce8e8; padding: .5em 1em; border-radius: 4px; }}
td, th {{ padding: .2em 1em .2em 0; text-align: left; }}
</style></head>
<body><nav><a href="/">home</a> <a href="/private?tab=stats">private page</a>
<a id="admin" href="/admin">admin</a> <a id="devices" href="/devices">your devices</a>
<a id="change-password" href="/password">password</a>
<span class="account">{account}</span></nav>
<div id="flashes">{flashes}</div><h1>{title}</h1>{body}</body></html>'''

# The private page adds notes with fetch() too: a POST of JSON that carries no
# CSRF token. The browser sends Sec-Fetch-Site: same-origin, and the plugin
# lets it through; a page on another site gets 403.
ADD_NOTE_SCRIPT = '''<script>
document.getElementById('add-js').addEventListener('click', async () => {
  const status = document.getElementById('js-status');
  const response = await fetch('/api/notes', {
    method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({note: document.getElementById('note').value})});
  const answer = await response.json();
  if (!response.ok) { status.textContent = answer.error; return; }
  const list = document.getElementById('notes');
  list.replaceChildren(...answer.notes.map(text => {
    const item = document.createElement('li'); item.textContent = text; return item; }));
  status.textContent = 'added without reloading the page';
});
</script>'''


def fold(name):
    """One spelling per account name, as `users` keys them: no case, accents, width or end
    blanks. In SQL, compare it byte for byte: a collation folds otherwise (MariaDB's default
    takes 'ı' for 'i', and every emoji for every other)."""
    return ''.join(c for c in unicodedata.normalize('NFKD', name)
                   if not unicodedata.combining(c)).casefold().strip()


def page(session, title, body):
    user = bottlesession.current_user()     # not session['valid']: a user signed out
    if user is not None:                    # everywhere (a new password) is out here too
        # Every page shows who is in: no browser keeps it (Back after logging out would).
        bottle.response.set_header('Cache-Control', 'no-store')
        account = ('signed in as <b id="user">%s</b> <form method="post" action="/logout">%s'
                   '<button id="logout">log out</button></form>'
                   % (html.escape(user['name']), session.csrf_field()))
    else:
        account = '<a id="login" href="/login">log in</a>'
    flashes = ''.join('<p class="flash %s">%s</p>' % (html.escape(category), html.escape(message))
                      for category, message in session.get_flashed_messages(with_categories=True))
    return PAGE.format(title=title, body=body, account=account, flashes=flashes)


def when(timestamp):
    return datetime.datetime.fromtimestamp(timestamp).strftime('%Y-%m-%d %H:%M:%S')


def make_app(manager):
    app = bottle.Bottle()
    # A real app keeps only these hashes, made by hash_password() at sign-up, each
    # user under fold(name): a sign-up refuses a name whose fold is taken.
    users = {fold(name): {'name': name, 'admin': name in ADMINS,
                          'hash': bottlesession.hash_password(password)}
             for name, password in ACCOUNTS.items()}
    if len(users) < len(ACCOUNTS):
        raise ValueError('two ACCOUNTS whose names fold alike: a sign-up refuses the second')
    app.install(bottlesession.SessionPlugin(
        manager,
        load_user=users.get,                    # user id -> user, for `user` and current_user()
        user_version=lambda user: user['hash']))  # a new password ends the other sessions
    valid_user = bottlesession.authenticator(manager, login_url='/login')

    def is_admin(session):
        return bottlesession.current_user()['admin']

    @app.route('/')
    def index(session):
        return page(session, 'bottlesession demo', '''<p>Log in as alice / wonderland (an
            admin) or bob / builder, then try the private page and the admin page. Log in
            from a second browser too, and look at your devices.</p>''')

    @app.route('/private')
    @valid_user
    def private(session):
        session['visits'] = session.get('visits', 0) + 1
        notes = ''.join('<li>%s</li>' % html.escape(n) for n in session.get('notes', []))
        return page(session, 'Private page', '''
            <p>Visits: <b id="visits">{visits}</b> · tab: <b id="tab">{tab}</b></p>
            <form method="post" action="/notes">{csrf}<input name="note" id="note">
            <button id="add">add a note</button>
            <button id="add-js" type="button">add it with fetch()</button></form>
            <p id="js-status"></p><ul id="notes">{notes}</ul>{script}
            '''.format(visits=session['visits'], notes=notes, csrf=session.csrf_field(),
                       tab=html.escape(bottle.request.query.get('tab', '')),
                       script=ADD_NOTE_SCRIPT))

    @app.post('/notes')
    @valid_user
    def add_note(session):
        session['notes'] = session.get('notes', []) + [bottle.request.forms.getunicode('note', '')]
        bottle.redirect('/private')

    @app.post('/api/notes')
    @valid_user(api=True)               # not signed in: 401 and JSON, not a redirect
    def api_add_note(session):
        try:
            note = bottle.request.json.get('note')
        except Exception:               # not JSON, or not an object
            note = None
        if not isinstance(note, str) or not note.isprintable() or not 0 < len(note) <= 200:
            bottle.response.status = 400            # isprintable: no lone surrogates
            return {'error': 'give a note of up to 200 characters'}
        session['notes'] = session.get('notes', []) + [note]
        return {'notes': session['notes']}

    @app.route('/admin')
    @valid_user(require=is_admin)       # others get 403 and stay signed in
    def admin(session):
        # Never a hash itself, nor part of one: it lets whoever sees it guess offline.
        rows = ''.join('<tr><td>%s</td><td>%s</td><td><code>%s</code></td><td>%s</td></tr>'
                       % (name, 'yes' if user['admin'] else 'no',
                          html.escape('$'.join(user['hash'].split('$')[:4])),
                          'yes' if bottlesession.needs_rehash(user['hash']) else 'no')
                       for name, user in sorted(users.items()))
        return page(session, 'Admin', '''<p>Only admins see this page. The server keeps
            no passwords, only their scrypt hashes, shown here by their cost alone:</p>
            <table id="accounts"><tr><th>name</th><th>admin</th><th>scrypt cost</th>
            <th>redone at next login</th></tr>%s</table>''' % rows)

    @app.route('/devices')
    @valid_user
    def devices(session):
        try:
            sessions = manager.user_sessions(session.user_id)
        except bottlesession.ConfigError:   # the cookie store: the browsers hold them
            return page(session, 'Your devices', '''<p id="no-list">This store keeps
                sessions in the browsers, so it cannot list them. A password change
                still ends them. Run the demo with --store file to see this page.</p>''')
        current = manager.storage_key(session.id)
        rows = ''.join(
            '<tr{mark}><td>{login}</td><td>{used}</td><td>{ends}</td><td>{this}</td></tr>'.format(
                mark=' id="current"' if s['key'] == current else '',
                login=when(s['login'] or s['created']), used=when(s['accessed']),
                ends=when(s['expires']), this='this browser' if s['key'] == current else '')
            for s in sorted(sessions, key=lambda s: -s['accessed']))
        return page(session, 'Your devices', '''<p>Where you are signed in:</p>
            <table id="sessions"><tr><th>signed in</th><th>last used</th><th>ends</th>
            <th></th></tr>{rows}</table>
            <form method="post" action="/devices/end-others">{csrf}
            <button id="end-others">log out everywhere else</button></form>
            '''.format(rows=rows, csrf=session.csrf_field()))

    @app.post('/devices/end-others')
    @valid_user
    def end_others(session):
        try:
            ended = manager.end_sessions(session.user_id, keep=session)
        except bottlesession.ConfigError:   # the cookie store lists no sessions to end
            ended = 0
        session.flash('Logged out of %d other session%s.' % (ended, '' if ended == 1 else 's'))
        bottle.redirect('/devices')

    @app.get('/password')
    @valid_user(fresh=15 * 60)          # signed in over 15 minutes ago: sign in again
    def password_form(session):
        return page(session, 'Change your password', '''<form method="post"
            action="/password">{csrf}
            <label>Current password <input name="current" id="current" type="password"></label>
            <label>New password <input name="new" id="new" type="password"></label>
            <button id="change">change it</button></form>
            <p>This ends your sessions on every other device.</p>
            '''.format(csrf=session.csrf_field()))

    @app.post('/password')
    @valid_user(fresh=15 * 60)
    def change_password(session, user):
        current = bottle.request.forms.getunicode('current', '')
        new = bottle.request.forms.getunicode('new', '')
        # A stolen session must not guess the password here either: the login's limit.
        if not manager.rate_limit('password:' + user['name'], LOGIN_ATTEMPTS, LOGIN_PERIOD):
            session.flash('Too many attempts. Try again in a few minutes.', 'error')
            bottle.redirect('/password')
        if not bottlesession.check_password(current, user['hash']):
            session.flash('Your current password is wrong.', 'error')
            bottle.redirect('/password')
        if len(new) < 8:
            session.flash('Choose a new password of at least 8 characters.', 'error')
            bottle.redirect('/password')
        user['hash'] = bottlesession.hash_password(new)     # a real app: UPDATE users ...
        # The new hash is the user's new user_version: every other session of
        # theirs is signed out when it is next used. A server store can also
        # delete them now. Then sign this one in again, under the new version.
        try:
            manager.end_sessions(session.user_id, keep=session)
        except bottlesession.ConfigError:   # the cookie store: user_version does it
            pass
        session.login(session.user_id, user=user)  # under the new hash
        session.flash('Your password is changed; your other sessions have ended.')
        bottle.redirect('/devices')

    @app.get('/login')
    def login_form(session):
        return page(session, 'Log in', '''<form method="post" action="/login">{csrf}
            <label>Name <input name="username" id="username"></label>
            <label>Password <input name="password" id="password" type="password"></label>
            <label><input type="checkbox" name="remember" id="remember"> remember me
            for 30 days</label><button id="submit">log in</button></form>
            '''.format(csrf=session.csrf_field()))

    @app.post('/login')
    def login(session):
        name = fold(bottle.request.forms.getunicode('username', ''))   # as `users` keys it
        password = bottle.request.forms.getunicode('password', '')
        # The record as checked: a copy, as a row read from a database is, for
        # a password change rewrites the one in `users` (login() keeps its version).
        user = users.get(name) and dict(users[name])
        # Keyed as the lookup is: one count per account, whatever the spelling, and
        # never one for two accounts (a good login to one would reset the other's).
        key = 'login:' + name
        if not manager.rate_limit(key, LOGIN_ATTEMPTS, LOGIN_PERIOD):
            session.flash('Too many attempts for this name. Try again in a few minutes.',
                          'error')
            bottle.redirect('/login')
        # Hashes even for a name nobody has, so the time taken does not tell.
        if not bottlesession.check_password(password, user and user['hash']):
            session.flash('Wrong name or password.', 'error')
            bottle.redirect('/login')
        manager.reset_rate_limit(key)
        session.login(name, user=user)  # the id users.get takes; a new id and CSRF secret
        # Remembered: a cookie for 30 days. Otherwise the cookie ends with the browser,
        # and the server still ends the session 30 days after the login (cookie_expires).
        remember = bottle.request.forms.get('remember')
        session.set_expiry(datetime.timedelta(days=30) if remember else 0)
        session.flash('Welcome back, %s' % user['name'])
        bottlesession.redirect_back(default='/private')

    @app.post('/logout')
    def logout(session):
        if session.get('valid'):        # stores nothing for a visitor who was not in
            session.logout()
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
    # No DEMO_SESSION_SECRET (its own name: not your app's SESSION_SECRET, or each would take the
    # other's logins): derived from this machine, with a warning. The cookie store derives its
    # own, bound to this file (another app of this user does not take its cookies). The server
    # stores sign small cookies with it too: a visitor's flashes are kept there, not stored.
    secret = os.environ.get('DEMO_SESSION_SECRET')
    if store == 'cookie':
        return bottlesession.CookieSession(secret=secret)
    secret = secret or bottlesession.machine_secret()
    if store == 'sqlite':
        return bottlesession.SQLSession(secret=secret)
    return bottlesession.PickleSession(secret=secret)


class ThreadingServer(bottle.ServerAdapter):
    """The standard library's wsgiref server, one thread per connection, so a
    client that opens a connection and sends nothing does not stall the rest
    (bottle's own 'wsgiref' serves one connection at a time)."""

    def run(self, app):
        class Server(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True       # Ctrl-C does not wait for idle connections

        class Handler(WSGIRequestHandler):
            timeout = 60                # an idle connection's thread ends after this

            def log_request(handler, *args, **kwargs):
                if not self.quiet:
                    WSGIRequestHandler.log_request(handler, *args, **kwargs)

        server = make_server(self.host, self.port, app, Server, Handler)
        self.port = server.server_port
        server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default=os.environ.get('HOST', '127.0.0.1'))
    parser.add_argument('--port', type=int, default=int(os.environ.get('PORT', 8080)))
    parser.add_argument('--store', choices=['file', 'sqlite', 'cookie'], default='file')
    parser.add_argument('--server', default=None,
                        help='a bottle server name, such as waitress (default: threaded '
                             'wsgiref); not gevent or eventlet, which patch before any import')
    args = parser.parse_args()
    bottle.run(make_app(make_manager(args.store)), host=args.host, port=args.port,
               server=args.server or ThreadingServer)


if __name__ == '__main__':
    main()
