// Test stand-in for NanoJ-Core's "Correct Drift": records the drift table ImageJ's OpenDialog resolved.
import ij.*; import ij.io.*; import ij.plugin.*;
public class CorrectDriftStub implements PlugIn {
  public void run(String arg) {
    OpenDialog od = new OpenDialog("Choose Drift-Table to load", null);
    String rec = "table=" + (od.getDirectory() == null ? null : od.getDirectory() + od.getFileName());
    System.setProperty("fmc.stub.Correct Drift", rec);
    IJ.log("stub " + rec);
  }
}
