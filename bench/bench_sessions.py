"""Benchmark bottlesession against its peers, in one process, in one run.

    pip install -e '.[bench]'
    python bench/bench_sessions.py [--smoke] [--json results.json]

Each scenario is a Bottle app called through WSGI in-process (no network), so
the figures are library overhead. Scenarios run interleaved, batch by batch,
so that noise on a shared machine hits them all alike. The report gives each
scenario's median time per request with min-max over the batches, its
overhead over a bare Bottle request, and the target ratios of issue 4, with
those of the login and CSRF work: a POST to a route without a session, checked
by Sec-Fetch-Site or by the token; load_user, free on routes that do not ask
for the user. --smoke runs a few hundred requests per scenario to show that it
still works.
"""
import argparse
import base64
import hashlib
import hmac
import io
import json
import math
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bottle  # noqa: E402

import bottlesession  # noqa: E402

# bottle 0.13 deprecates pickled signed cookies, the peer measured here.
warnings.filterwarnings('ignore', category=DeprecationWarning)

SECRET = 'bench-secret-0123456789abcdef-0123456789'
SMALL = {'user': 'alice', 'theme': 'dark', 'n': 1}
MEDIUM = dict(SMALL, history=['/page/%d?ref=item-%d' % (i, i) for i in range(60)])
NOISE = '; '.join('_ga%d=GA1.2.%d.%d' % (i, 1000000 + i, 1700000000 + i) for i in range(20))


###############################################################################
# Driving a WSGI app in-process ###############################################
###############################################################################

def environ_for(path='/', cookie=None, method='GET', headers=None):
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path, 'QUERY_STRING': '',
               'CONTENT_LENGTH': '0',
               'SERVER_NAME': 'localhost', 'SERVER_PORT': '80', 'HTTP_HOST': 'localhost',
               'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.url_scheme': 'http',
               'wsgi.errors': sys.stderr, 'wsgi.multithread': False,
               'wsgi.multiprocess': False, 'wsgi.run_once': False, 'wsgi.version': (1, 0)}
    if cookie:
        environ['HTTP_COOKIE'] = cookie
    for name, value in (headers or {}).items():
        environ['HTTP_' + name.upper().replace('-', '_')] = value
    return environ


def call(app, template, want_body=False):
    """One request; returns (status, headers), and the body if asked."""
    result = {}

    def start_response(status, headers, exc_info=None):
        result['status'], result['headers'] = status, headers
    environ = dict(template)
    environ['wsgi.input'] = io.BytesIO()
    body = app(environ, start_response)
    chunks = [chunk for chunk in body]
    if hasattr(body, 'close'):
        body.close()
    if want_body:
        return result['status'], result['headers'], b''.join(chunks).decode()
    return result['status'], result['headers']


def all_cookies(app, path):
    """One request; returns (the Cookie header of every cookie it set, its body)."""
    status, headers, body = call(app, environ_for(path), want_body=True)
    pairs = [v.strip().split(';')[0] for k, v in headers if k.lower() == 'set-cookie']
    if not pairs:
        raise RuntimeError('%s set no cookie: %s %s' % (path, status, headers))
    return '; '.join(pairs), body


def first_cookie(app, path, name, extra=None):
    """Make a session by one request, and return the Cookie header to send after."""
    status, headers = call(app, environ_for(path, extra))
    for key, value in headers:
        value = value.strip()
        if key.lower() == 'set-cookie' and value.startswith(name + '='):
            pair = value.split(';')[0]
            return pair + ('; ' + extra if extra else '')
    raise RuntimeError('%s set no %s cookie: %s %s' % (path, name, status, headers))


class Scenario:
    def __init__(self, name, app=None, environ=None, group='', run=None):
        self.name, self.app, self.environ, self.group = name, app, environ, group
        self.run_one = run or (lambda: call(self.app, self.environ))
        self.batches = []

    def batch(self, n):
        run = self.run_one
        start = time.perf_counter()
        for _ in range(n):
            run()
        self.batches.append((time.perf_counter() - start) / n * 1e6)

    @property
    def median(self):
        return statistics.median(self.batches)


###############################################################################
# The apps ####################################################################
###############################################################################

def bare_app():
    app = bottle.Bottle()

    @app.route('/', method=['GET', 'POST'])
    def index():
        return 'ok'
    return app


USERS = {'alice': {'name': 'alice', 'admin': False}}


def counting_loader(calls):
    """load_user from a dict, counting its calls in calls[0]."""
    def load_user(user_id):
        calls[0] += 1
        return USERS.get(user_id)
    return load_user


def ours(manager, data, change=True, load_user=None):
    """Read-modify-save (or read-only) through the plugin."""
    app = bottle.Bottle()
    options = {'load_user': load_user} if load_user else {}    # compare_versions: 2.0 has none
    app.install(bottlesession.SessionPlugin(manager, **options))

    @app.route('/')
    def index(session):
        if change:
            session['n'] = session.get('n', 0) + 1
        else:
            session.get('user')
        return 'ok'

    @app.route('/start')
    def start(session):
        session.update(data)
        return 'ok'

    @app.route('/plain', method=['GET', 'POST'])
    def plain():
        return 'ok'

    @app.route('/token')
    def token(session):
        session['n'] = 0
        return session.csrf_token()

    @app.route('/login')
    def login(session):
        session.login('alice')
        session.update(data)
        return 'ok'

    @app.route('/me')
    def me(user):
        return user['name']
    return app


def bottle_signed(data):
    app = bottle.Bottle()

    @app.route('/')
    def index():
        session = bottle.request.get_cookie('s', secret=SECRET) or {}
        session['n'] = session.get('n', 0) + 1
        bottle.response.set_cookie('s', session, secret=SECRET, path='/', httponly=True)
        return 'ok'

    @app.route('/start')
    def start():
        bottle.response.set_cookie('s', dict(data), secret=SECRET, path='/', httponly=True)
        return 'ok'
    return app


def itsdangerous_app(data):
    from itsdangerous import URLSafeTimedSerializer, BadSignature
    serializer = URLSafeTimedSerializer(SECRET, salt='cookie-session')
    app = bottle.Bottle()

    @app.route('/')
    def index():
        try:
            session = serializer.loads(bottle.request.get_cookie('s', ''), max_age=86400)
        except BadSignature:
            session = {}
        session['n'] = session.get('n', 0) + 1
        bottle.response.set_cookie('s', serializer.dumps(session), path='/', httponly=True)
        return 'ok'

    @app.route('/start')
    def start():
        bottle.response.set_cookie('s', serializer.dumps(data), path='/', httponly=True)
        return 'ok'
    return app


def beaker_app(data, **options):
    from beaker.middleware import SessionMiddleware
    app = bottle.Bottle()

    @app.route('/')
    def index():
        session = bottle.request.environ['beaker.session']
        session['n'] = session.get('n', 0) + 1
        session.save()
        return 'ok'

    @app.route('/start')
    def start():
        session = bottle.request.environ['beaker.session']
        session.update(data)
        session.save()
        return 'ok'
    options = dict(options, key='s', secret=SECRET, validate_key=SECRET, httponly=True)
    return SessionMiddleware(app, {'session.' + k: v for k, v in options.items()})


def driver_app(read, write):
    """The bare driver doing the same read and write as a store, in a Bottle route."""
    app = bottle.Bottle()

    @app.route('/')
    def index():
        write(read())
        return 'ok'
    return app


def floor(data):
    """HMAC-SHA256 + JSON + base64 of the payload, both ways, with no framework."""
    key = hashlib.sha256(SECRET.encode()).digest()

    def run():
        body = base64.urlsafe_b64encode(json.dumps(data, separators=(',', ':')).encode())
        sig = base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest())
        value = body + b'.' + sig
        body2, _, sig2 = value.rpartition(b'.')
        expected = base64.urlsafe_b64encode(hmac.new(key, body2, hashlib.sha256).digest())
        hmac.compare_digest(sig2, expected)
        return json.loads(base64.urlsafe_b64decode(body2))
    return run


###############################################################################
# Servers and stores ##########################################################
###############################################################################

def start_redis(workdir):
    binary = shutil.which('redis-server')
    try:
        import redis
    except ImportError:
        return None, None
    if not binary:
        return None, None
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                             '--appendonly', 'no', '--dir', workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host='127.0.0.1', port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, client
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def fill(manager, count):
    """Store `count` other sessions, as a busy site would have, through the
    store interface (see ServerSession): a record {'c', 'a', 'd'} under the
    storage key of a fresh id, as dumps() makes it."""
    now = int(time.time())
    record = {'c': now, 'a': now, 'd': dict(SMALL, valid=False)}
    blob, expires = manager.dumps(record), math.ceil(manager.expires_at(record))
    for _ in range(count):
        if not manager.write(manager.storage_key(bottlesession._new_id()), blob, expires):
            raise RuntimeError('fill(): a fresh key was taken')


def cleanup_cost(make, expired):
    """Microseconds per expired session removed by cleanup()."""
    manager = make()
    fill(manager, expired)
    manager.now = lambda: time.time() + manager.max_age + 10
    start = time.perf_counter()
    removed = manager.cleanup()
    took = time.perf_counter() - start
    assert removed == expired, (removed, expired)
    return took / expired * 1e6


###############################################################################
# The run #####################################################################
###############################################################################

def expect(app, environ, status='200 OK', set_cookie=False):
    """Check a scenario's request once before timing it."""
    got, headers = call(app, environ)
    sets = [v for k, v in headers if k.lower() == 'set-cookie']
    if got != status or bool(sets) != set_cookie:
        raise SystemExit('%s %s: %s, Set-Cookie %s' % (
            environ['REQUEST_METHOD'], environ['PATH_INFO'], got, sets))


def build(workdir, scale, redis_client, shm, checks):
    scenarios = []

    def add(name, app, path_cookie, group='', environ=None):
        scenarios.append(Scenario(name, app, environ or environ_for('/', path_cookie), group))

    bare = bare_app()
    add('bare bottle', bare, None)
    cookie = bottlesession.CookieSession(secret=SECRET)
    app = ours(cookie, SMALL)
    add('plugin installed, route without session', app, None)
    scenarios[-1].environ = environ_for('/plain')

    # The plugin checks every unsafe request, to routes without a session too:
    # by the browser's Sec-Fetch-Site when it sends one, else by the token.
    add('bare bottle POST', bare, None, environ=environ_for('/', method='POST'))
    environ = environ_for('/plain', method='POST', headers={'Sec-Fetch-Site': 'same-origin'})
    expect(app, environ)
    expect(app, dict(environ, HTTP_SEC_FETCH_SITE='cross-site'), '403 Forbidden')
    add('POST, no session, Sec-Fetch-Site check', app, None, environ=environ)
    cookies, token = all_cookies(app, '/token')
    environ = environ_for('/plain', cookies, 'POST', {'X-CSRF-Token': token})
    expect(app, environ)
    expect(app, environ_for('/plain', cookies, 'POST'), '403 Forbidden')
    add('POST, no session, token (neither header)', app, None, environ=environ)

    # load_user: free for a route that never asks for the user; one call from
    # a dict for a route that takes `user`.
    loaded, unused = [0], [0]
    installed = ours(cookie, SMALL, load_user=counting_loader(unused))
    add('CookieSession rms small, load_user installed', installed,
        first_cookie(installed, '/start', 'session_data'), 'small')
    users = ours(cookie, SMALL, load_user=counting_loader(loaded))
    environ = environ_for('/me', first_cookie(users, '/login', 'session_data'))
    expect(users, environ)
    loaded[0] = 0
    for _ in range(3):
        call(users, environ)
    if loaded[0] != 3:
        raise SystemExit('a route with `user` called load_user %d times in 3 requests'
                         % loaded[0])
    add('CookieSession read-only, route with user', users, None, 'small', environ)
    checks.append(lambda: unused[0] == 0 or SystemExit(
        'load_user was called %d times on routes that never ask for the user' % unused[0]))
    read_only = ours(cookie, SMALL, change=False)
    add('CookieSession read-only', read_only, first_cookie(read_only, '/start', 'session_data'))
    status, headers = call(read_only, scenarios[-1].environ)
    if any(k.lower() == 'set-cookie' for k, v in headers):
        raise SystemExit('a read-only request wrote a cookie: %s' % headers)
    print('read-only request: %s, no Set-Cookie' % status)
    add('CookieSession rms small', app, first_cookie(app, '/start', 'session_data'), 'small')
    # The cookie a browser sends back is the one this process signed last, whose JSON the
    # manager keeps: it skips the HMAC. One another process (worker) signed is verified.
    signed_here = scenarios[-1].environ['HTTP_COOKIE'].partition('=')[2]
    checks.append(lambda: signed_here in cookie._signed or SystemExit(
        'the cookie of "CookieSession rms small" left the cache of values signed lately'))
    elsewhere = ours(bottlesession.CookieSession(secret=SECRET), SMALL)
    add('CookieSession rms small, another worker\'s', app,
        first_cookie(elsewhere, '/start', 'session_data'), 'small')
    medium = ours(cookie, MEDIUM)
    add('CookieSession rms medium', medium, first_cookie(medium, '/start', 'session_data'),
        'medium')
    add('CookieSession rms small +20 cookies', app,
        first_cookie(app, '/start', 'session_data', NOISE), 'noise')

    peers = [('bottle signed cookie', bottle_signed, 's')]
    try:
        import itsdangerous  # noqa: F401
        peers.append(('itsdangerous', itsdangerous_app, 's'))
    except ImportError:
        print('itsdangerous is not installed: pip install -e ".[bench]"')
    try:
        import beaker  # noqa: F401
        peers.append(('Beaker cookie', lambda d: beaker_app(d, type='cookie'), 's'))
        peers.append(('Beaker file', lambda d: beaker_app(
            d, type='file', data_dir=os.path.join(workdir, 'beaker'),
            lock_dir=os.path.join(workdir, 'beaker-lock')), 's'))
    except ImportError:
        print('Beaker is not installed: pip install -e ".[bench]"')
    if shm and 'Beaker file' in [p[0] for p in peers]:
        peers.append(('Beaker file (tmpfs)', lambda d: beaker_app(
            d, type='file', data_dir=os.path.join(shm, 'beaker'),
            lock_dir=os.path.join(shm, 'beaker-lock')), 's'))
    for name, factory, cookie_name in peers:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            peer = factory(SMALL)
            add(name + ' rms small', peer, first_cookie(peer, '/start', cookie_name), 'small')
            if name == 'bottle signed cookie':
                add(name + ' rms medium', factory(MEDIUM),
                    first_cookie(factory(MEDIUM), '/start', cookie_name), 'medium')
                add(name + ' rms small +20 cookies', peer,
                    first_cookie(peer, '/start', cookie_name, NOISE), 'noise')
    scenarios.append(Scenario('floor: HMAC+JSON+base64, no framework', run=floor(SMALL)))

    pickle_dir = os.path.join(workdir, 'pickle')
    files = bottlesession.PickleSession(pickle_dir)
    app = ours(files, SMALL)
    add('PickleSession rms small', app, first_cookie(app, '/start', 'sessionid'), 'small')
    if shm:     # where a rename does not force the data to disk first, as on ext4
        app = ours(bottlesession.PickleSession(os.path.join(shm, 'pickle')), SMALL)
        add('PickleSession (tmpfs) rms small', app, first_cookie(app, '/start', 'sessionid'),
            'small')
    sql = bottlesession.SQLSession(os.path.join(workdir, 'sessions.db'))
    app = ours(sql, SMALL)
    add('SQLSession (SQLite) rms small', app, first_cookie(app, '/start', 'sessionid'), 'small')
    conn = sqlite3.connect(os.path.join(workdir, 'driver.db'))
    conn.execute('PRAGMA journal_mode=WAL')
    conn.execute('PRAGMA synchronous=NORMAL')
    conn.execute('CREATE TABLE t (id VARCHAR(64) PRIMARY KEY, data TEXT, expires BIGINT)')
    conn.execute('CREATE INDEX t_expires ON t (expires)')     # the same schema as ours
    conn.execute('INSERT INTO t VALUES (?, ?, ?)', ('k' * 43, json.dumps(SMALL), 0))
    conn.commit()

    def sqlite_read():
        return json.loads(conn.execute('SELECT data FROM t WHERE id = ? AND expires >= ?',
                                       ('k' * 43, 0)).fetchone()[0])

    def sqlite_write(data):
        data['n'] += 1
        conn.execute('INSERT INTO t (id, data, expires) VALUES (?, ?, ?) ON CONFLICT (id) DO '
                     'UPDATE SET data = excluded.data, expires = excluded.expires',
                     ('k' * 43, json.dumps(data), int(time.time()) + 3600))
        conn.commit()
    add('bare sqlite3: SELECT + upsert', driver_app(sqlite_read, sqlite_write), None)
    if redis_client is not None:
        rs = bottlesession.RedisSession(redis_client)
        app = ours(rs, SMALL)
        add('RedisSession rms small', app, first_cookie(app, '/start', 'sessionid'), 'small')
        redis_client.set('bench:k', json.dumps(SMALL))

        def redis_write(data):
            data['n'] += 1
            redis_client.set('bench:k', json.dumps(data), ex=3600)
        add('bare redis-py: GET + SET EX', driver_app(
            lambda: json.loads(redis_client.get('bench:k')), redis_write), None)

    for count in scale:
        for label, make in (('PickleSession', lambda c=count: bottlesession.PickleSession(
                                os.path.join(workdir, 'pickle-%d' % c))),
                            ('SQLSession', lambda c=count: bottlesession.SQLSession(
                                os.path.join(workdir, 'scale-%d.db' % c)))):
            manager = make()
            fill(manager, count)
            app = ours(manager, SMALL)
            add('%s rms, %d stored' % (label, count), app,
                first_cookie(app, '/start', 'sessionid'), 'scale')
    return scenarios


def report(scenarios, cleanup, args):
    by = {s.name: s for s in scenarios}
    bare = by['bare bottle'].median

    def over(name):
        return by[name].median - (0 if name.startswith('floor') else bare)
    print('\n%-44s %10s %18s %10s' % ('scenario', 'median µs', 'min-max µs', 'overhead'))
    for s in scenarios:
        print('%-44s %10.1f %8.1f-%-9.1f %10.1f' % (
            s.name, s.median, min(s.batches), max(s.batches), over(s.name)))
    print('\ncleanup() per expired session: ' + ', '.join(
        '%s %.1f µs' % item for item in cleanup.items()))

    targets = []

    def target(text, value, limit):
        targets.append({'target': text, 'ratio': round(value, 3), 'limit': limit,
                        'met': value <= limit})

    signed = 'bottle signed cookie rms small'
    target('CookieSession rms small / bottle signed', over('CookieSession rms small') / over(signed), 0.5)
    target("the same, another worker's cookie / bottle signed",
           over("CookieSession rms small, another worker's") / over(signed), 0.5)
    target('CookieSession rms small / floor', over('CookieSession rms small')
           / over('floor: HMAC+JSON+base64, no framework'), 2.5)
    target('CookieSession +20 cookies / bottle signed +20 cookies',
           over('CookieSession rms small +20 cookies') / over(signed + ' +20 cookies'), 0.5)
    target('CookieSession read-only / bottle signed rms', over('CookieSession read-only') / over(signed), 0.35)
    target('plugin, route without session / bare (total time)',
           by['plugin installed, route without session'].median / bare, 1.05)
    bare_post = by['bare bottle POST'].median
    target('POST Sec-Fetch-Site, no session / bare POST (total time)',
           by['POST, no session, Sec-Fetch-Site check'].median / bare_post, 1.15)
    target('POST token, no session / CookieSession read-only',
           (by['POST, no session, token (neither header)'].median - bare_post)
           / over('CookieSession read-only'), 1.5)
    target('rms small, load_user installed / not (total time)',
           by['CookieSession rms small, load_user installed'].median
           / by['CookieSession rms small'].median, 1.05)
    target('read-only, route with user / CookieSession read-only',
           over('CookieSession read-only, route with user') / over('CookieSession read-only'),
           1.25)
    if 'Beaker file rms small' in by:
        target('PickleSession / Beaker file', over('PickleSession rms small')
               / over('Beaker file rms small'), 1 / 3)
    if 'Beaker file (tmpfs) rms small' in by:
        target('PickleSession / Beaker file, both on tmpfs', over(
            'PickleSession (tmpfs) rms small') / over('Beaker file (tmpfs) rms small'), 1 / 3)
    counts = sorted({int(s.name.split(', ')[1].split()[0]) for s in scenarios if s.group == 'scale'})
    if len(counts) == 2:
        for label in ('PickleSession', 'SQLSession'):
            target('%s rms at %d / at %d stored' % (label, counts[1], counts[0]),
                   by['%s rms, %d stored' % (label, counts[1])].median
                   / by['%s rms, %d stored' % (label, counts[0])].median, 1.25)
    target('SQLSession (SQLite) / bare sqlite3', over('SQLSession (SQLite) rms small')
           / over('bare sqlite3: SELECT + upsert'), 1.5)
    if 'RedisSession rms small' in by:
        target('RedisSession / bare redis-py', over('RedisSession rms small')
               / over('bare redis-py: GET + SET EX'), 1.5)
    print('\n%-56s %7s %7s  %s' % ('target (overheads unless said)', 'ratio', 'limit', ''))
    for t in targets:
        print('%-56s %7.2f %7.2f  %s' % (t['target'], t['ratio'], t['limit'],
                                         'met' if t['met'] else 'MISSED'))
    return targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--smoke', action='store_true', help='a few hundred requests each')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args()
    requests, batches = (50, 6) if args.smoke else (400, 25)
    scale = (100, 1000) if args.smoke else (1000, 100000)
    workdir = tempfile.mkdtemp(prefix='bs-bench-')
    shm = tempfile.mkdtemp(prefix='bs-bench-', dir='/dev/shm') if os.access(
        '/dev/shm', os.W_OK) else None
    redis_proc, redis_client = start_redis(workdir)
    try:
        print('bottlesession %s, bottle %s, Python %s, %s, %d CPUs' % (
            bottlesession.__version__, bottle.__version__, platform.python_version(),
            platform.platform(), os.cpu_count()))
        if redis_client is None:
            print('redis-server or redis-py missing: the Redis rows are left out')
        checks = []
        scenarios = build(workdir, scale, redis_client, shm, checks)
        # Writing 100,000 session files leaves the disk busy for a while: flush
        # it and let the journal commit (ext4: every 5 s) before measuring.
        os.sync()
        time.sleep(0.5 if args.smoke else 6)
        for s in scenarios:         # warm up
            for _ in range(max(20, requests // 10)):
                s.run_one()
        for _ in range(batches):
            for s in scenarios:
                s.batch(requests)
        expired = 200 if args.smoke else 5000
        cleanup = {
            'PickleSession': cleanup_cost(lambda: bottlesession.PickleSession(
                os.path.join(workdir, 'expire'), cleanup_chance=0), expired),
            'SQLSession': cleanup_cost(lambda: bottlesession.SQLSession(
                os.path.join(workdir, 'expire.db'), cleanup_chance=0), expired)}
        for check in checks:
            failed = check()
            if failed is not True:
                raise failed
        print('load_user: 0 calls on a route that never asks for the user; 1 per request '
              'on a route that takes `user`')
        print('%d batches of %d requests per scenario, interleaved' % (batches, requests))
        targets = report(scenarios, cleanup, args)
        if args.json:
            with open(args.json, 'w') as out:
                json.dump({'requests': requests, 'batches': batches,
                           'python': platform.python_version(), 'bottle': bottle.__version__,
                           'scenarios': {s.name: {'median_us': s.median, 'min_us': min(s.batches),
                                                  'max_us': max(s.batches)} for s in scenarios},
                           'cleanup_us_per_session': cleanup, 'targets': targets}, out, indent=2)
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        if shm:
            shutil.rmtree(shm, ignore_errors=True)


if __name__ == '__main__':
    main()
