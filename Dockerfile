# One image for every service (app, workers, migrations), installed exactly as the README does: pip + requirements.txt.
# On x86_64, PyPI's torch==2.13.0 is the CUDA build, so the same image runs the GPU and the CPU worker.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/optlab

COPY requirements.txt .
RUN python -m pip install -r requirements.txt

COPY app app
COPY workers workers
COPY models models
COPY db db
COPY alembic.ini pyproject.toml ./

RUN useradd --create-home optlab && mkdir -p data && chown optlab data
USER optlab
EXPOSE 8501 8502
CMD ["python", "-m", "app.web", "--server.address", "0.0.0.0", "--server.port", "8501"]
