# minBERT Studio: the Streamlit app and the CLI on CPU.
#   docker build -t minbert-studio .
#   docker run -p 8501:8501 -v $PWD/checkpoints:/app/checkpoints minbert-studio
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
# torch is pinned in requirements.txt (==2.13.0). For a slim CPU-only image, install its
# CPU wheel first from the PyTorch CPU index of your choice, then the rest.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8501
CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
