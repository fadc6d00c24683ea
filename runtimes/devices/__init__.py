"""Devices that run artifacts with their own runtimes: an emulated aarch64 Python here, a board over SSH.

Both speak one job protocol (``edgeclip.runtimes.device_runner``: a folder in, ``result.json`` +
``outputs.npy`` out); a device only says how to get files there and run a command.
"""

from .base import Device, DeviceError, RunResult, runtime_zip
from .emulated import EmulatedArm64, arm64_env_dir
from .ssh import SshDevice, parse_ssh_url

__all__ = ["Device", "DeviceError", "RunResult", "runtime_zip", "EmulatedArm64", "arm64_env_dir", "SshDevice",
           "parse_ssh_url"]
