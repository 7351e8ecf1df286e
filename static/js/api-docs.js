// Renders the OpenAPI document with Swagger UI (served from /static/vendor, no CDN).
const root = document.getElementById('swagger-ui');
window.SwaggerUIBundle({ url: root.dataset.specUrl, domNode: root, deepLinking: true });
