"""End to end: requests per second through waitress, measured by wrk.

    python bench/end_to_end.py [--seconds 5] [--rounds 3]

Serves one Bottle app with waitress (4 threads) and drives it with wrk over
HTTP on this machine: a route without a session, and a read-modify-save of
each store, each request with one of 64 sessions in turn. Rounds interleave
the routes; the report gives each route's median requests per second and its
ratio to the route without a session. Needs wrk (Debian: apt install wrk) and
waitress (pip install -e '.[bench]').
"""
import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bottle  # noqa: E402

import bottlesession  # noqa: E402

SESSIONS = 64
LUA = """
cookies = {%s}
n = 0
request = function()
    n = n + 1
    return wrk.format(nil, nil, {Cookie = cookies[n %% #cookies + 1]})
end
"""


def app_for(manager):
    app = bottle.Bottle()
    app.install(bottlesession.SessionPlugin(manager))

    @app.route('/rms')
    def rms(session):
        session['n'] = session.get('n', 0) + 1
        return 'ok'

    @app.route('/start')
    def start(session):
        session.update(user='alice', theme='dark', n=1)
        return 'ok'
    return app


def dispatch(plain, apps):
    """Serve /s<n>/... by apps['/s<n>'], the rest by `plain`: each request runs one
    Bottle app, as in production. Not bottle.mount(): on bottle 0.12 a mounted app
    runs inside a second request cycle, about 15 us that the route without a
    session, on the root app, would not pay."""
    def wsgi(environ, start_response):
        prefix = '/' + environ['PATH_INFO'].split('/')[1]
        if prefix in apps:
            environ['SCRIPT_NAME'] += prefix
            environ['PATH_INFO'] = environ['PATH_INFO'][len(prefix):]
            return apps[prefix](environ, start_response)
        return plain(environ, start_response)
    return wsgi


def serve(app, port):
    import waitress
    logging.getLogger('waitress').setLevel(logging.ERROR)     # "Task queue depth"
    thread = threading.Thread(target=waitress.serve, args=(app,), daemon=True,
                              kwargs=dict(host='127.0.0.1', port=port, threads=4,
                                          _quiet=True))
    thread.start()
    for _ in range(100):
        try:
            urllib.request.urlopen('http://127.0.0.1:%d/plain' % port).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit('waitress did not start')


def cookies_for(base, prefix):
    found = []
    for _ in range(SESSIONS):
        with urllib.request.urlopen(base + prefix + '/start') as reply:
            found.append(reply.headers['Set-Cookie'].split(';')[0])
    return found


def wrk(url, script, seconds):
    out = subprocess.run(['wrk', '-t1', '-c8', '-d%ds' % seconds, '-s', script, url],
                         capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith('Requests/sec:')][0]
    if 'Non-2xx' in out or 'Socket errors' in out:
        raise SystemExit('wrk saw errors:\n' + out)
    return float(line.split()[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    if not shutil.which('wrk'):
        raise SystemExit('wrk is not installed (Debian: apt install wrk)')
    work = tempfile.mkdtemp(prefix='bs-e2e-')
    shm = tempfile.mkdtemp(prefix='bs-e2e-', dir='/dev/shm') if os.access(
        '/dev/shm', os.W_OK) else None
    stores = [('CookieSession', bottlesession.CookieSession(secret='e2e-' + 'x' * 32)),
              ('PickleSession (disk)', bottlesession.PickleSession(work + '/files'))]
    if shm:
        stores.append(('PickleSession (tmpfs)', bottlesession.PickleSession(shm + '/files')))
    stores.append(('SQLSession (SQLite)', bottlesession.SQLSession(work + '/sessions.db')))
    plain = bottle.Bottle()
    plain.route('/plain', callback=lambda: 'ok')
    apps = {'/s%d' % index: app_for(manager) for index, (_, manager) in enumerate(stores)}
    port = 18000 + os.getpid() % 1000
    base = 'http://127.0.0.1:%d' % port
    serve(dispatch(plain, apps), port)
    routes = [('no session', base + '/plain', ['x=1'])]
    routes += [(name + ' rms', base + '/s%d/rms' % i, cookies_for(base, '/s%d' % i))
               for i, (name, _) in enumerate(stores)]
    scripts = {}
    for name, url, cookies in routes:
        path = os.path.join(work, '%d.lua' % len(scripts))
        with open(path, 'w') as out:
            out.write(LUA % ', '.join('"%s"' % c for c in cookies))
        scripts[name] = path
    print('bottlesession %s, bottle %s, waitress 4 threads, wrk -t1 -c8, %d s x %d rounds'
          % (bottlesession.__version__, bottle.__version__, args.seconds, args.rounds))
    rates = {name: [] for name, _, _ in routes}
    for _ in range(args.rounds):
        for name, url, _ in routes:
            os.sync()       # the disk store's writeback is not the next route's cost
            rates[name].append(wrk(url, scripts[name], args.seconds))
    plain = statistics.median(rates['no session'])
    for name, _, _ in routes:
        rate = statistics.median(rates[name])
        print('%-32s %8.0f req/s  %.2f of no session' % (name, rate, rate / plain))
    shutil.rmtree(work, ignore_errors=True)
    if shm:
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == '__main__':
    main()
