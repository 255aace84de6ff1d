"""Throw-away moto server (AWS APIs over HTTP) for tests and benchmarks: `moto_server` in a
child process on a free loopback port, so boto3 makes real HTTP calls to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "eu-west-1"
# boto3 signs every request; moto accepts any credentials.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": REGION}


class MotoStartError(RuntimeError):
    """moto_server exited or never answered."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint)."""
        urllib.request.urlopen(urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.url)

    def network(self, zones: str = "a") -> tuple[list[str], str]:
        """A VPC with one subnet per zone letter, and an image to launch: what the AWS
        driver needs (its subnets and image id)."""
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{k + 1}.0/24",
                                     AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
                   for k, zone in enumerate(zones)]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        return subnets, image

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_moto(log_path: Path, ready_timeout_s: float = 60.0) -> MotoServer:
    """Start moto_server (beside this Python) and wait until it answers; sets fake AWS
    credentials in this process's environment if none are set."""
    for key, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    port = _free_port()
    binary = Path(sys.executable).with_name("moto_server")
    with open(log_path, "wb") as out:
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    server = MotoServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            server.reset()
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise MotoStartError(log_path.read_text()[-2000:]) from None
            time.sleep(0.2)
