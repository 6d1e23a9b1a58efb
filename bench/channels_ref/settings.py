"""(d) What a Django team would pick today: a Channels consumer with group_send over channels-redis."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "bench.channels_ref.asgi"
urlpatterns: list = []
ASGI_APPLICATION = "bench.channels_ref.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["BENCH_REDIS_URL"]], "capacity": 100_000},
    }
}
USE_TZ = True
