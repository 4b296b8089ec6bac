"""``python -m examples.django_site``: the Django shop on 127.0.0.1:$SHOP_PORT (default 5000)."""

import atexit
import os
import signal
import sys

import django
from django.conf import settings
from django.core.management import call_command

from examples.django_site import shop

shop.configure()
django.setup()
atexit.register(
    lambda: os.path.exists(db := settings.DATABASES["default"]["NAME"]) and os.remove(db)
)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the demo database is removed
shop.create_demo_users()
call_command("runserver", f"127.0.0.1:{os.environ.get('SHOP_PORT', '5000')}", use_reloader=False)
