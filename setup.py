import re

from setuptools import setup

with open('bottlesession.py', encoding='utf-8') as source:
    text = source.read()
version = re.search(r"^__version__ = '([^']+)'", text, re.M).group(1)
summary = re.search(r'"""bottlesession: (.+)', text).group(1)

with open('README.md', encoding='utf-8') as readme:
    long_description = readme.read()

setup(
    name='bottlesession',
    version=version,
    description=summary,
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='MIT',
    py_modules=['bottlesession'],
    python_requires='>=3.9',
    install_requires=['bottle>=0.12'],
    extras_require={
        'test': ['pytest', 'webtest', 'hypothesis', 'redis', 'psycopg[binary]', 'psycopg-pool',
                 'pymysql', 'waitress', 'selenium'],
        'bench': ['beaker', 'itsdangerous', 'redis'],
    },
    classifiers=[
        'Framework :: Bottle',
        'License :: OSI Approved :: MIT License',
        'Programming Language :: Python :: 3',
        'Topic :: Internet :: WWW/HTTP :: Session',
    ],
)
