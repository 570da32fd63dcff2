"""Packaging for qrgate, the QR turnstile controller.

picamera2, libcamera and lgpio come from apt on the Raspberry Pi and are never
listed here (see README, "Raspberry Pi").
"""

from setuptools import find_packages, setup

setup(
    name="qrgate",
    version="0.1.0",
    description="Headless QR turnstile controller: camera, offline pass checks, relay, durable MQTT events",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["firmware", "firmware.*", "device", "device.*", "provisioning", "provisioning.*",
                                    "backoffice", "backoffice.*"]),
    package_data={
        "device": ["profiles/*.toml", "*.txt"],
        "firmware": ["schema/*.json", "*.toml"],
        "provisioning": ["*.toml", "data/*"],
        # The back office's templates, static files and translations (.po and the compiled .mo).
        "backoffice": ["templates/*/*.html", "templates/*.html", "static/backoffice/*", "locale/*/LC_MESSAGES/*"],
    },
    install_requires=[
        "paho-mqtt>=2.1,<3",
        "gpiozero>=2.0.1.post3,<3",
        "tinydb>=4.8,<5",
        "segno>=1.6,<2",
        "zxing-cpp>=3.1,<4",
        "cbor2>=5.6,<7",
        "cryptography>=42,<51",
        "base45>=0.4.4,<0.5",
        "pillow>=10,<14",
        # Unpinned on purpose: on a Pi the apt numpy (seen through --system-site-packages)
        # satisfies it, so pip never installs a wheel that would break picamera2.
        "numpy",
        "vietnam-provinces>=2025.1",
    ],
    extras_require={
        "zbar": ["zbar-py>=1.0.4,<2"],
        "webcam": ["opencv-python-headless>=4.8,<5"],
        "history": ["psycopg[binary]>=3.1,<4", "openpyxl>=3.1,<4"],
        # The back office (backoffice/): Django 5.2 LTS (Python 3.10+), gunicorn, whitenoise.
        "backoffice": ["Django>=5.2,<6", "gunicorn>=22,<28", "whitenoise>=6.6,<7",
                       "psycopg[binary]>=3.1,<4", "openpyxl>=3.1,<4"],
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "zbar-py>=1.0.4,<2",
            "psycopg[binary]>=3.1,<4",
            "openpyxl>=3.1,<4",
            "playwright>=1.45,<2",
            "Django>=5.2,<6",
            "gunicorn>=22,<28",
            "whitenoise>=6.6,<7",
            "mypy>=1.10,<3",
            "ruff>=0.5,<1",
            # coverage-guided fuzzing (tests/fuzz_credentials.py); wheels exist for x86_64 only
            'atheris>=3,<4; platform_machine == "x86_64" and python_version < "3.14"',
        ],
    },
    entry_points={"console_scripts": ["qrgate = firmware.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Hardware",
    ],
)
