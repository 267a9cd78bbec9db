from tests.fixtures.tracking_project import *  # noqa: F403 - shared with tests/train and tests/tracking
from tests.github.conftest import fake_github, forge_factory, sleeps  # noqa: F401 - promotion on merge reads PRs
