"""pytest plugin (entry point `pytest11`): adds --flashmla-backend / --flashmla-device."""


def pytest_addoption(parser):
    group = parser.getgroup("flashmla", "flashmla conformance kit")
    group.addoption("--flashmla-backend", action="store", default=None,
                    help="name of the installed flashmla backend to check (see `flashmla info`)")
    group.addoption("--flashmla-device", action="store", default=None,
                    help="device to run on (default: the accelerator if the backend serves it, else cpu)")
