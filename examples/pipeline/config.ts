// tglib's service_config.json: pipelines of jobs, each run every `period` seconds, and how many consumers run them.
export const serviceConfig = {
  num_consumers: 5,
  pipelines: {
    test_pipeline: {
      period: 300,
      jobs: [{ name: 'add_x', enabled: true, params: { metric_name: 'foo', x: 5 } }],
    },
  },
};
