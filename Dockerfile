# Build and run llm-router. The same image serves `gateway`, `worker` and `serve`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin llm-router

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/llm-router /usr/local/bin/llm-router
ENV LLM_ROUTER_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["llm-router"]
CMD ["serve"]
