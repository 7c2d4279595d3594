// An HTTPS GET with Java's own HttpClient and its default trust settings:
// prints the status and the body's length, or the exception that ended it.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[0])).build();
        try {
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + " " + response.body().length());
        } catch (java.io.IOException error) {
            System.out.println("failed: " + error.getClass().getSimpleName());
            System.exit(1);
        }
    }
}
