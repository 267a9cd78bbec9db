from tests.fixtures.tracking_project import *  # noqa: F403 - shared with tests/train and tests/tracking
