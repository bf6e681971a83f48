"""Another version of bottlesession.py against this one, interleaved in one process.

    python bench/compare_versions.py OLD/bottlesession.py [batches] [requests]

For example, the version before a change: git show HEAD~1:bottlesession.py > /tmp/old.py.
It prints each store's median per request for both versions, the SQLite and
Redis ratios to their bare drivers, the cookie ratio to bottle's signed cookie,
and PickleSession new/old, on disk and on tmpfs. Medians and ratios only: the
machines are shared and noisy.
"""
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(here), here]
import bottlesession
import bench_sessions as b
spec = importlib.util.spec_from_file_location('bs_old', sys.argv[1])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)

def main(batches=25, requests=300):
    workdir = tempfile.mkdtemp(prefix='bs-cmp-', dir=os.path.dirname(os.path.abspath(__file__)))
    shm = tempfile.mkdtemp(prefix='bs-cmp-', dir='/dev/shm')
    proc, client = b.start_redis(workdir)
    sc = []
    def add(name, app, cookie):
        sc.append(b.Scenario(name, app, b.environ_for('/', cookie)))
    add('bare bottle', b.bare_app(), None)
    for tag, mod in (('old', old), ('new', bottlesession)):
        b.bottlesession = mod
        for where, base in (('disk', workdir), ('tmpfs', shm)):
            app = b.ours(mod.PickleSession(os.path.join(base, tag + '-files')), b.SMALL)
            add('%s Pickle %s' % (tag, where), app, b.first_cookie(app, '/start', 'sessionid'))
        app = b.ours(mod.SQLSession(os.path.join(workdir, tag + '-sessions.db')), b.SMALL)
        add(tag + ' SQLSession', app, b.first_cookie(app, '/start', 'sessionid'))
        app = b.ours(mod.RedisSession(client, prefix=tag + ':'), b.SMALL)
        add(tag + ' RedisSession', app, b.first_cookie(app, '/start', 'sessionid'))
        app = b.ours(mod.CookieSession(secret=b.SECRET), b.SMALL)
        add(tag + ' Cookie', app, b.first_cookie(app, '/start', 'session_data'))
    add('bottle signed', b.bottle_signed(b.SMALL), None)
    sc[-1].environ = b.environ_for('/', b.first_cookie(b.bottle_signed(b.SMALL), '/start', 's'))
    conn = sqlite3.connect(os.path.join(workdir, 'driver.db'))
    conn.execute('PRAGMA journal_mode=WAL'); conn.execute('PRAGMA synchronous=NORMAL')
    conn.execute('CREATE TABLE t (id VARCHAR(64) PRIMARY KEY, data TEXT, expires BIGINT)')
    conn.execute('CREATE INDEX t_expires ON t (expires)')
    conn.execute('INSERT INTO t VALUES (?, ?, ?)', ('k' * 43, json.dumps(b.SMALL), 0)); conn.commit()
    def sqlite_read():
        return json.loads(conn.execute('SELECT data FROM t WHERE id = ? AND expires >= ?', ('k' * 43, 0)).fetchone()[0])
    def sqlite_write(data):
        data['n'] += 1
        conn.execute('INSERT INTO t (id, data, expires) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires = excluded.expires', ('k' * 43, json.dumps(data), int(time.time()) + 3600))
        conn.commit()
    add('bare sqlite3', b.driver_app(sqlite_read, sqlite_write), None)
    client.set('bench:k', json.dumps(b.SMALL))
    def redis_write(data):
        data['n'] += 1
        client.set('bench:k', json.dumps(data), ex=3600)
    add('bare redis', b.driver_app(lambda: json.loads(client.get('bench:k')), redis_write), None)
    for s in sc:
        for _ in range(40): s.run_one()
    for _ in range(batches):
        for s in sc: s.batch(requests)
    by = {s.name: s.median for s in sc}
    bare = by['bare bottle']
    for s in sc: print('%-28s %8.1f µs' % (s.name, s.median))
    over = lambda n: by[n] - bare
    for tag in ('old', 'new'):
        print('%s: SQLite/bare %.2f  Redis/bare %.2f  cookie/bottle signed %.2f' % (tag,
            over(tag + ' SQLSession') / over('bare sqlite3'), over(tag + ' RedisSession') / over('bare redis'),
            over(tag + ' Cookie') / over('bottle signed')))
    for where in ('disk', 'tmpfs'):
        print('Pickle %s new/old %.2f' % (where, by['new Pickle ' + where] / by['old Pickle ' + where]))
    proc.kill(); proc.wait(); shutil.rmtree(workdir, ignore_errors=True); shutil.rmtree(shm, ignore_errors=True)

if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[2:]))
