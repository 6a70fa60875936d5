// Test stand-in for NanoJ-Core's "Register Channels - Apply": records the mask ImageJ's OpenDialog resolved.
import ij.*; import ij.io.*; import ij.plugin.*;
public class RegisterChannelsApplyStub implements PlugIn {
  public void run(String arg) {
    OpenDialog od = new OpenDialog("Open translation mask", null);
    String rec = "mask=" + (od.getDirectory() == null ? null : od.getDirectory() + od.getFileName());
    System.setProperty("fmc.stub.Register Channels - Apply", rec);
    IJ.log("stub " + rec);
  }
}
