"""Run the whole portal on one machine with nothing else installed: web server, Celery worker and beat.

The worker uses the broker in local files (no Redis), so `make run` needs only Python. Ctrl-C stops every process.
"""

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from airr_portal.celery import QUEUES
from airr_portal.demo import DEMO_PASSWORD, demo_logins


class Command(BaseCommand):
    help = "Start the portal, a Celery worker and beat for local use; Ctrl-C stops them all."

    def add_arguments(self, parser):
        parser.add_argument("--address", default="127.0.0.1:8000")

    def handle(self, *args, address, **options):
        python = sys.executable
        processes = [
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "airr_portal",
                    "worker",
                    "--beat",
                    "--loglevel",
                    "WARNING",
                    "--concurrency",
                    "2",
                    "--queues",
                    ",".join(QUEUES),
                    "--schedule",
                    settings.CELERY_BEAT_SCHEDULE_FILENAME,
                ]
            ),
            subprocess.Popen([python, "manage.py", "runserver", address, "--noreload"]),
        ]
        self._print_welcome(address)
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(process.poll() is None for process in processes):
                time.sleep(0.5)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.stdout.write("Stopped the portal, the worker and beat.")

    def _print_welcome(self, address):
        lines = [
            "",
            f"AIRR Portal running at http://{address}/ (worker and beat started; Ctrl-C stops all)",
            f"Demo logins (password for all: {DEMO_PASSWORD}):",
        ]
        for role, email, needs_mfa in demo_logins():
            note = "  (two-factor: run `.venv/bin/python manage.py demo_totp` for a code)" if needs_mfa else ""
            lines.append(f"  {role:<20} {email}{note}")
        self.stdout.write("\n".join(lines) + "\n")
