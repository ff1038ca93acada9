"""Tests for services.common.programs: supervisord sections for the backends meshworker runs."""

from __future__ import annotations

import configparser
import shlex

from services.common.config import ServiceConfig
from services.common.programs import backend_programs, program_section

OCR = ServiceConfig(name="vision-ocr", upstream="unix:/run/ocr.sock",
                    command=("meshworker", "run", "svc-vision-ocr"))
REMOTE = ServiceConfig(name="remote", upstream="http://10.0.0.5:9000")


def command_line(section: str) -> str:
    return next(line for line in section.splitlines() if line.startswith("command="))


def test_only_services_with_a_command_get_a_file():
    assert list(backend_programs((OCR, REMOTE))) == ["svc-vision-ocr.conf"]
    assert backend_programs((REMOTE,)) == {}


def test_section_is_named_after_the_program():
    section = program_section(OCR)

    assert section.splitlines()[0] == "[program:svc-vision-ocr]"
    assert command_line(section) == "command=meshworker run svc-vision-ocr"
    assert "autorestart=true" in section.splitlines()


def test_percent_is_doubled():
    svc = ServiceConfig(name="x", upstream="http://h:1", command=("printf", "50%"))

    assert command_line(program_section(svc)) == "command=printf 50%%"


def test_command_is_shell_quoted():
    command = ("python", "-m", "echo", "--greeting", "hi there", "it's")
    svc = ServiceConfig(name="x", upstream="http://h:1", command=command)

    line = command_line(program_section(svc))

    assert shlex.split(line.removeprefix("command=")) == list(command)


def test_section_parses_and_supervisord_interpolation_restores_the_command():
    # supervisord reads these files with %(name)s expansion; a doubled % must come back as one.
    command = ("sh", "-c", "echo 100% $HOME")
    svc = ServiceConfig(name="x", upstream="http://h:1", command=command)
    parser = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())

    parser.read_string(program_section(svc))

    assert shlex.split(parser["program:svc-x"]["command"]) == list(command)
